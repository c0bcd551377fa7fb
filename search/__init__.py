"""The CLI, the Python API and the study orchestrator: sweep grammar, samplers and pruners, the objective."""

from hpsearch.search.api import load_model, search
from hpsearch.search.errors import UsageError
from hpsearch.search.spec import ResolvedSpec, StudySpec, resolve
from hpsearch.search.sweep import Sweep, SweepParam, parse_sweep

__all__ = ["ResolvedSpec", "StudySpec", "Sweep", "SweepParam", "UsageError", "load_model", "parse_sweep", "resolve", "search"]
