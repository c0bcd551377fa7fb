"""The CLI and the study orchestrator: sweep grammar, sampler and pruner choice, the objective."""

from hpsearch.search.errors import UsageError
from hpsearch.search.spec import ResolvedSpec, StudySpec, resolve
from hpsearch.search.sweep import Sweep, SweepParam, parse_sweep

__all__ = ["ResolvedSpec", "StudySpec", "Sweep", "SweepParam", "UsageError", "parse_sweep", "resolve"]
