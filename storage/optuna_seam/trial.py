"""A trial's storage id, its cached copy and its parameters in one request (1, 3 and 8 of the
package's docstring)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.trial import FrozenTrial


# --- 1. A trial's storage id. ---------------------------------------------------------------------
def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of ``trial`` (what ``storage.get_trial`` takes), from Optuna's private ``_trial_id``."""
    return trial._trial_id


def as_taken(trial: optuna.Trial) -> FrozenTrial:
    """``trial`` as its worker read it on taking it, with what it wrote since: no query.

    What a trial is created with (a retry's history, ``retry_of``, fixed parameters) is as stored.
    """
    return trial._cached_frozen_trial


@contextmanager
def params_in_one_request(trial: optuna.Trial) -> Iterator[None]:
    """Within the block, ``trial``'s ``suggest_*`` calls are stored together at its end, where the storage can.

    Each ``suggest_*`` is a transaction of its own on a database URL, and a request of its own
    behind the storage proxy; hpsearch's storages (``params_batched``) store them in one at the
    end of the block, and none if the block raises. The trial's own copy of its parameters is
    Optuna's, set at each call as always.
    """
    storage = getattr(trial.storage, "_backend", trial.storage)  # the database behind Optuna's cache (8 of the package's docstring)
    batched = getattr(storage, "params_batched", None)
    if batched is None:
        yield
        return
    with batched(trial_id(trial)):
        yield


class ParamBatches:
    """The parameter writes a storage holds back, by trial id, while ``params_in_one_request``'s block runs."""

    def __init__(self) -> None:
        self._pending: dict[int, list[Any]] = {}

    def hold(self, trial_id: int, param: Any) -> bool:
        """Hold ``param`` if a batch of ``trial_id`` is open; False if it is to be stored now."""
        pending = self._pending.get(trial_id)
        if pending is None:
            return False
        pending.append(param)
        return True

    @contextmanager
    def batch(self, trial_id: int, store: Callable[[list[Any]], None]) -> Iterator[None]:
        """Hold ``trial_id``'s parameters within the block, then ``store`` them, unless the block raised."""
        pending: list[Any] = []
        self._pending[trial_id] = pending
        try:
            yield
        finally:
            del self._pending[trial_id]
        if pending:
            store(pending)


def reported(trial: optuna.Trial, step: int) -> bool:
    """Whether ``trial`` has a report at ``step``: Optuna keeps a step's first report (``Trial.report``)."""
    return step in trial._cached_frozen_trial.intermediate_values


def remember_report(trial: optuna.Trial, step: int, value: float) -> None:
    """Tell ``trial`` of a report stored outside ``Trial.report``, as ``Trial.report`` does, so that its pruner sees it."""
    trial._cached_frozen_trial.intermediate_values[step] = float(value)
