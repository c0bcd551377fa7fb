"""Optuna without its per-trial log lines and experimental-API notices: hpsearch speaks for itself,
for a whole command (``silence_optuna``) or for one call of the Python API (``quiet_optuna``)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import optuna


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna without its per-trial INFO lines and experimental-API warnings, restored afterwards."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def silence_optuna() -> None:
    """Quiet Optuna for the rest of the process, as a command does: its per-trial log lines, its tracebacks
    of failed trials (the objective prints those once, with the reason) and experimental-API notices
    would bury the epoch lines."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
