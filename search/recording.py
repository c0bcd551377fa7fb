"""``TrialRecording``: what is recorded on a trial as its epochs end, trained or simulated alike.

The objective feeds it the records the trainer emits; the simulator feeds it records read from a
learning curve. Both then store the same rows, make the same reports and get the same pruning
decisions, so what a simulated benchmark judges is what a real search does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna

from hpsearch.search.goals import Goal
from hpsearch.storage.attributes import EPOCHS_RUN_ATTR, LR_HISTORY_ATTR, PRUNE_REASON_ATTR, PRUNED_VALUES_ATTR
from hpsearch.storage.errors import DiskFullError
from hpsearch.storage.recorder import TrialRecorder
from hpsearch.storage.retry import DatabaseUnavailable
from hpsearch.trainers.records import EpochRecord, format_epoch_line

if TYPE_CHECKING:
    from hpsearch.search.pareto import ParetoPruner
    from hpsearch.search.trial import Budget


class TrialAbandoned(BaseException):
    """This worker stops training a trial it may no longer own, and leaves the trial RUNNING.

    Raised when the trial's heartbeat could not be stored for nearly the grace period (another
    worker may soon fail the trial and take it over), when a peer has already failed it, when the
    database has been away past ``--db-timeout`` (``error``, a final ``DatabaseUnavailable``: the
    worker then stops), or when a disk is full (``error``, a ``DiskFullError``: the worker stops).
    A ``BaseException`` so that Optuna neither catches it nor tells the trial's state: the trial
    goes stale, and its heartbeat retry resumes from its last checkpoint, like a killed worker's.
    ``handed_back``: the trial's retry is queued already, and the orchestrator tells it FAIL.
    """

    def __init__(
        self, number: int, reason: str, error: DatabaseUnavailable | DiskFullError | None = None, handed_back: bool = False
    ) -> None:
        super().__init__(number, reason)
        self.number, self.reason, self.error, self.handed_back = number, reason, error, handed_back


class TrialRecording:
    """One trial's record, epoch by epoch, then its closing attributes.

    Every epoch: a line through ``echo``, the epoch's row and (single objective) the report of
    ``metric`` through the recorder, then the pruner's verdict, but for the last epoch, whose work
    is done: Optuna's pruner's on one objective, ``pareto``'s (``search/pareto.py``) on several.
    While the database is away, rows are kept and stored with a later epoch's, and training goes on.

    ``costs`` gives the model's cost attributes (``params.count``, ``flops.*``) once it has run an
    epoch; a multi-objective trial stores them then, so that peers can rank it while it runs.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        recorder: TrialRecorder,
        metric: str,
        epochs: int,
        pruner: str,
        multi_objective: bool = False,
        echo: Callable[[str], None] = print,
        pareto: ParetoPruner | None = None,
    ) -> None:
        self.trial, self.recorder, self.metric, self.epochs = trial, recorder, metric, epochs
        self.pruner, self.multi_objective, self.echo, self.pareto = pruner, multi_objective, echo, pareto
        self.costs: Callable[[], Mapping[str, Any]] = dict
        self.costs_stored = False
        # What the pareto pruner stopped the trial at (``PRUNED_VALUES_ATTR``), for the samplers.
        self.pruned_values: list[float] | None = None
        self.records: list[EpochRecord] = []
        # Epochs finished but not yet stored: while the database is away, training goes on.
        self.unstored: list[EpochRecord] = []

    def epoch_ended(self, record: EpochRecord) -> None:
        """Record a finished epoch; ``optuna.TrialPruned`` if the pruner stops the trial here."""
        self.records.append(record)
        self.echo(f"Trial {self.trial.number} | {format_epoch_line(record)}")  # workers' lines interleave
        self.check_heartbeat()
        self.unstored.append(record)
        try:
            with self.recorder.deferring(), self.owned():  # a first failure defers the writes to the next epoch
                self.store()
                reason = self.prune_reason(record) if record.epoch < self.epochs else None
        except DatabaseUnavailable as error:
            if error.final:
                raise
            self.echo(
                f"Trial {self.trial.number}: epoch {record.epoch} is kept and stored once the database is back; training goes on"
            )
            return
        if reason is not None:
            raise optuna.TrialPruned(reason)

    def prune_reason(self, record: EpochRecord) -> str | None:
        """Why the pruner stops the trial after ``record``'s epoch, or None if it goes on."""
        if self.multi_objective:
            if self.pareto is None:
                return None
            costs = self.costs()
            if costs and not self.costs_stored:
                self.recorder.set_attrs(self.trial, costs)
                self.costs_stored = True
            if record.epoch not in self.pareto.rungs:
                return None  # before building its rows: most epochs are no rung
            rows = self.rows()
            reason = self.pareto.prune_reason(self.trial, self.recorder, rows, costs)
            if reason is not None:  # stored with the closing attributes, in the same write
                self.pruned_values = self.pareto.stand_in(rows, costs)
            return reason
        if not self.trial.should_prune():
            return None
        reason = f"pruned by the {self.pruner} pruner at epoch {record.epoch}: {self.metric}={record.value(self.metric):.4g}"
        # A pruner may say what it judged against (the rung pruner's median); Optuna's say nothing.
        explain = getattr(self.trial.study.pruner, "explain", None)
        why = explain(self.trial.number) if explain is not None else None
        return f"{reason}, {why}" if why else reason

    def rows(self) -> list[dict[str, Any]]:
        """The epoch rows of the trial so far, oldest first."""
        return [record.as_row() for record in self.records]

    def store(self) -> None:
        """Store the unstored epochs, oldest first, removing each once stored."""
        while self.unstored:
            record = self.unstored[0]
            value = None if self.multi_objective else record.value(self.metric)
            self.recorder.write_epoch(self.trial, record.epoch, record.as_row(), value)
            self.unstored.pop(0)

    def restore(self, restored: Sequence[EpochRecord]) -> None:
        """Carry a taken-over trial's finished epochs over to this one, without training them again.

        A heartbeat retry inherited the intermediate values the killed trial reported; an epoch
        it checkpointed but had not yet reported, and every epoch of a grid point queued again,
        is reported here.
        """
        reported = self.recorder.frozen(self.trial).intermediate_values
        for record in restored:
            fresh = record.epoch not in reported and not self.multi_objective
            self.recorder.write_epoch(
                self.trial, record.epoch, record.as_row(), record.value(self.metric) if fresh else None
            )
            self.records.append(record)

    def check_heartbeat(self) -> None:
        """``TrialAbandoned`` once the trial's heartbeat has gone unstored so long that a peer may take it over."""
        reason = self.recorder.heartbeat_lost(self.trial)
        if reason is not None:
            self.recorder.note_abandoned(self.trial, reason)
            raise TrialAbandoned(self.trial.number, reason)

    def check_budget(self, budget: Budget) -> None:
        """Prune a configuration over ``--max-flops``/``--max-params`` before anything is trained.

        The excess goes to the sampler as Optuna constraints, so it learns to avoid the region.
        """
        trial = self.trial
        trial.set_user_attr("budget", {"flops_per_sample": budget.flops_per_sample, "params": budget.params})
        trial.set_user_attr("constraints", list(budget.constraints))
        for key, value in zip(("0", "1"), budget.constraints):
            # Keys "0" and "1": those Optuna gave the list a constraints_func returned, so a study
            # begun under an earlier hpsearch keeps one set of names (GP refuses a mix).
            trial.set_constraint(key, value)
        if budget.over:
            reason = "over budget: " + ", ".join(budget.over)
            trial.set_user_attr(PRUNE_REASON_ATTR, reason)
            trial.set_user_attr(EPOCHS_RUN_ATTR, 0)
            self.echo(f"Trial {trial.number} pruned: {reason}")
            raise optuna.TrialPruned(reason)

    def finish(self, attrs: Mapping[str, Any], reason: tuple[str, str] | None) -> dict[str, Any]:
        """Store what is left, set the closing attributes (with ``epochs_run``, ``lr_history`` and the reason) and return them.

        ``TrialAbandoned`` if the trial is no longer this worker's to end: the writes can wait out an
        outage longer than the grace period, during which a peer may have failed the trial and
        queued its retry (which then records the stored epochs), or may be about to.
        """
        self.check_heartbeat()
        with self.owned():
            self.store()
        closing = {EPOCHS_RUN_ATTR: len(self.records), LR_HISTORY_ATTR: [r.lr for r in self.records], **attrs}
        if self.pruned_values is not None:
            closing[PRUNED_VALUES_ATTR] = self.pruned_values
        if reason is not None:
            closing[reason[0]] = reason[1]
            # The pruners' reasons say "pruned by ..." themselves.
            said = reason[1] if reason[1].startswith("pruned ") else f"{'pruned' if reason[0] == 'prune_reason' else 'failed'}: {reason[1]}"
            self.echo(f"Trial {self.trial.number} {said}")
        with self.owned():
            lost = self.recorder.close(self.trial, closing)
        if lost is not None:
            raise TrialAbandoned(self.trial.number, lost)
        return closing

    @contextlib.contextmanager
    def owned(self) -> Iterator[None]:
        """Within the block, a write refused because a peer has ended the trial is ``TrialAbandoned``."""
        try:
            yield
        except optuna.exceptions.UpdateFinishedTrialError:
            raise TrialAbandoned(
                self.trial.number, "a peer failed it while this worker could not reach the database; its retry records it"
            ) from None

    def values(self, goals: Sequence[Goal], attrs: Mapping[str, Any]) -> float | list[float]:
        """The trial's objective values: each goal's value after the last epoch (``Goal.value``)."""
        rows = self.rows()
        values = [goal.value(rows, attrs) for goal in goals]
        return values if self.multi_objective else values[0]
