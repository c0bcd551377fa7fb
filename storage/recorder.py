"""Where a trial's epochs, reports and attributes go: the study database, or memory.

The objective and the simulator record a trial through one small interface, ``TrialRecorder``,
so that the logic of what is recorded when lives in one place (``search/recording.py``) and
can be tested, or simulated thousands of times, on an in-memory study.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, ContextManager, Protocol

import optuna
from optuna.trial import FrozenTrial

from hpsearch.storage.attributes import FAIL_REASON_ATTR
from hpsearch.storage.epoch_metrics import EpochMetricsTable
from hpsearch.storage.errors import DiskFullError
from hpsearch.storage.optuna_seam import QueuedRDBStorage, remember_report, reported, trial_id
from hpsearch.storage.retry import DatabaseUnavailable


class TrialRecorder(Protocol):
    """What recording a trial needs from a study's storage."""

    def write_epoch(self, trial: optuna.Trial, epoch: int, row: Mapping[str, Any], value: float | None) -> None:
        """Store one epoch's row, then report ``value`` at step ``epoch`` (None: report nothing)."""

    def set_attrs(self, trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
        """Set several user attributes of a running trial."""

    def close(self, trial: optuna.Trial, attrs: Mapping[str, Any]) -> str | None:
        """Set ``trial``'s closing attributes and store its heartbeat; why this worker no longer owns it, else None.

        ``UpdateFinishedTrialError`` if a peer has ended the trial: only a trial still running
        after this can be told COMPLETE, by this worker and no other.
        """

    def frozen(self, trial: optuna.Trial) -> FrozenTrial:
        """The trial as stored now."""

    def epoch_rows(self, trial: optuna.Trial, through_epoch: int) -> dict[int, list[dict[str, Any]]]:
        """The epoch rows up to ``through_epoch`` of every trial of ``trial``'s study, oldest first, by trial number."""

    def deferring(self) -> ContextManager[None]:
        """Calls inside give up at their first transient failure (``DatabaseUnavailable``), to be retried later."""

    def heartbeat_lost(self, trial: optuna.Trial) -> str | None:
        """Why this worker may no longer own ``trial`` (its heartbeat went unstored too long), else None.

        ``DiskFullError`` if the last beat failed on a full disk.
        """

    def note_abandoned(self, trial: optuna.Trial, reason: str) -> None:
        """Say on the trial why it was left, if the storage answers at once."""


class DatabaseRecorder:
    """A trial's record in the study database: epoch rows in ``hpsearch_epoch_metrics``, the rest in Optuna's tables."""

    def __init__(self, storage: QueuedRDBStorage, epoch_table: EpochMetricsTable) -> None:
        self.storage = storage
        self.epoch_table = epoch_table

    def write_epoch(self, trial: optuna.Trial, epoch: int, row: Mapping[str, Any], value: float | None) -> None:
        # The row and the report commit together. A step already reported keeps its first value,
        # as with Trial.report: a heartbeat retry that trains again the epochs its killed
        # predecessor reported but never got into the artifact store (an S3 outage) keeps the
        # values it inherited, and its rows are the newer measurement.
        report = None if value is None or reported(trial, epoch) else (epoch, value)
        self.epoch_table.write(trial_id(trial), row, report)
        if report is not None:
            remember_report(trial, *report)

    def set_attrs(self, trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
        self.storage.set_trial_user_attrs(trial_id(trial), attrs)

    def close(self, trial: optuna.Trial, attrs: Mapping[str, Any]) -> str | None:
        # The beat keeps peers from judging the trial stale for a whole grace period, and the
        # write checks that the trial still runs: after an outage, a peer may have failed it.
        self.storage.set_trial_user_attrs(trial_id(trial), attrs, beat=True)
        return self.heartbeat_lost(trial)

    def frozen(self, trial: optuna.Trial) -> FrozenTrial:
        return self.storage.get_trial(trial_id(trial))

    def epoch_rows(self, trial: optuna.Trial, through_epoch: int) -> dict[int, list[dict[str, Any]]]:
        return self.epoch_table.rows_by_trial(trial.study.study_name, through_epoch)

    def deferring(self) -> ContextManager[None]:
        return self.storage.retry.patience(0)

    def heartbeat_lost(self, trial: optuna.Trial) -> str | None:
        failure = self.storage.heartbeat_errors.get(trial_id(trial))
        if isinstance(failure, DiskFullError):
            # Nothing can be stored until space is freed: stop now, not after the grace period.
            raise DiskFullError(failure.path, failure.doing)
        # The margin is one interval: a peer fails the trial only when the stored heartbeat is
        # older than the grace period, and the stored one is never newer than our last success.
        interval, grace = self.storage.heartbeat_interval, self.storage.grace_period
        if interval is None:
            return None
        age = self.storage.heartbeat_age(trial_id(trial))
        if age <= (grace or 2 * interval) - interval:
            return None
        why = f"{type(failure).__name__}: {failure}" if failure is not None else "no answer"
        return f"its heartbeat could not be stored for {age:.0f} s ({why})"

    def note_abandoned(self, trial: optuna.Trial, reason: str) -> None:
        try:
            with self.storage.retry.patience(0):
                self.storage.set_trial_user_attrs(trial_id(trial), {FAIL_REASON_ATTR: f"abandoned: {reason}"})
        except (DatabaseUnavailable, optuna.exceptions.UpdateFinishedTrialError):
            pass  # the trial may already be another worker's


class MemoryRecorder:
    """A trial's record with the epoch rows kept in memory, for studies on Optuna's ``InMemoryStorage``.

    ``rows[trial_number]`` lists the trial's epoch rows in the order they were written.
    """

    def __init__(self) -> None:
        self.rows: dict[int, list[dict[str, Any]]] = {}

    def write_epoch(self, trial: optuna.Trial, epoch: int, row: Mapping[str, Any], value: float | None) -> None:
        rows = self.rows.setdefault(trial.number, [])
        rows[:] = [r for r in rows if r.get("epoch") != epoch] + [dict(row)]
        if value is not None:
            trial.report(value, epoch)

    def set_attrs(self, trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def frozen(self, trial: optuna.Trial) -> FrozenTrial:
        return trial.study.get_trials(deepcopy=False)[trial.number]

    def epoch_rows(self, trial: optuna.Trial, through_epoch: int) -> dict[int, list[dict[str, Any]]]:
        # Rows are kept in the order written; a rewritten epoch went to the end.
        return {
            number: sorted((r for r in rows if r["epoch"] <= through_epoch), key=lambda r: r["epoch"])
            for number, rows in self.rows.items()
        }

    def deferring(self) -> ContextManager[None]:
        return _nothing()

    def heartbeat_lost(self, trial: optuna.Trial) -> str | None:
        return None

    def close(self, trial: optuna.Trial, attrs: Mapping[str, Any]) -> str | None:
        self.set_attrs(trial, attrs)
        return None

    def note_abandoned(self, trial: optuna.Trial, reason: str) -> None:
        self.set_attrs(trial, {FAIL_REASON_ATTR: f"abandoned: {reason}"})


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield
