"""The CLI, the Python API and the study orchestrator: sweep grammar, samplers and pruners, the objective."""

from __future__ import annotations

import importlib
from typing import Any

# Each name's module, imported when the name is first used: ``hpsearch`` (search.cli) starts
# by importing this package, and its ``--help`` must not wait for torch and Optuna.
_EXPORTS = {
    "load_model": "api", "load_task": "api", "replay_study": "replay", "search": "api", "simulate_search": "simulate",
    "UsageError": "errors",
    "ResolvedSpec": "resolved", "StudySpec": "spec", "resolve": "resolved",
    "Sweep": "sweep", "SweepParam": "sweep", "parse_sweep": "sweep",
}

__all__ = ["ResolvedSpec", "StudySpec", "Sweep", "SweepParam", "UsageError", "load_model", "load_task", "parse_sweep", "replay_study", "resolve", "search", "simulate_search"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
