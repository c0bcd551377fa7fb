"""``TrialHandover``: what a trial takes over from the trials before it, and what it hands back to the queue.

A trial takes over earlier ones when it is a heartbeat retry of a killed trial (Optuna's retry
history) or a point queued again after its trial was preempted, failed or stopped by a full disk
(``retry_of``). It resumes from their newest readable checkpoint or, where that checkpoint holds
every epoch (the worker lost the database at the very end), records their result and trains
nothing. A stopped trial says why (``prune_reason``, ``fail_reason``: ``training_stopped`` and
``trial_stopped`` tell each error's meaning) and, where it can be resumed (preempted, a full
disk), hands its point back: a retry is queued first, naming every trial it takes over.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

from hpsearch.search.checkpoint_sync import CheckpointUploads, ResumeCandidates, ResumePoint
from hpsearch.search.queue import trial_point
from hpsearch.search.recording import TrialAbandoned
from hpsearch.search.signals import Preempted, interruption
from hpsearch.search.trial import checkpoint_dir
from hpsearch.search.trial_attrs import model_attrs
from hpsearch.storage.artifacts import CheckpointArchive
from hpsearch.storage.attributes import (
    ARTIFACTS_ATTR,
    CHECKPOINT_ATTR,
    FAIL_REASON_ATTR,
    PRECISION_ATTR,
    PRECISION_SPEEDUP_ATTR,
    PRUNE_REASON_ATTR,
    RETRY_OF_ATTR,
)
from hpsearch.storage.errors import DiskFullError, is_disk_full
from hpsearch.storage.optuna_seam import as_taken
from hpsearch.storage.recorder import TrialRecorder
from hpsearch.storage.retry import DatabaseUnavailable
from hpsearch.trainers.checkpoints import CheckpointStore
from hpsearch.trainers.trainer import DivergenceError

if TYPE_CHECKING:
    from torch import nn

    from hpsearch.search.recording import TrialRecording
    from hpsearch.search.trial import TrialPlan


def taken_over_by(frozen: optuna.trial.FrozenTrial) -> set[int]:
    """The numbers of the trials ``frozen`` takes over: a heartbeat retry's (Optuna's retry history), a requeued point's (``retry_of``)."""
    return {*RetryHeartbeatStaleTrialCallback.retry_history(frozen), *frozen.user_attrs.get(RETRY_OF_ATTR, [])}


@dataclass(frozen=True)
class Stop:
    """What an error that stopped a trial's training means: what the trial raises for it, and what it records."""

    raises: BaseException
    cause: BaseException | None = None  # what ``raises`` is raised from, where it is another error than the one caught
    reason: tuple[str, str] | None = None  # the closing attribute that says why: prune_reason or fail_reason
    abandoned: bool = False  # the trial is no longer this worker's to write
    attrs: dict[str, Any] = field(default_factory=dict)  # closing attributes besides the reason


class TrialHandover:
    """Resumes a trial from the trials it takes over; says why a trial stopped, and hands its point back."""

    def __init__(
        self, recorder: TrialRecorder, output_dir: str, archive: CheckpointArchive | None, echo: Callable[[str], None],
        requeue_interrupted: bool = False,
    ) -> None:
        self.recorder, self.output_dir, self.archive, self.echo = recorder, output_dir, archive, echo
        # A worker's: a trial that Ctrl-C stopped is queued again at once, as a preempted one, for
        # the next worker started; a plain run's re-run queues it (StudyQueue.queue_budget).
        self.requeue_interrupted = requeue_interrupted

    def resume_point(self, trial: optuna.Trial, model: nn.Module) -> ResumePoint:
        """The newest readable checkpoint of the trials this one takes over (``ResumePoint.first_readable``).

        For each of them, newest first, ``last.pt`` then ``prev.pt`` is tried (fetched from the
        artifact store where this machine has neither); a checkpoint passed over is named in
        ``checkpoint_fallback``, with where training starts instead. With nothing readable the
        trial starts fresh.
        """
        numbers = taken_over_by(as_taken(trial))
        if not numbers:
            return ResumePoint()
        candidates = ResumeCandidates(self.output_dir, trial.study.study_name, numbers, self.archive)
        point = ResumePoint.first_readable(candidates, model)
        if point.fallback is not None:
            trial.set_user_attr("checkpoint_fallback", point.fallback)
            self.echo(f"Trial {trial.number}: {point.fallback}")
        return point

    def carry_best(self, resume: ResumePoint, plan: TrialPlan) -> None:
        """Copy the ``best.pt`` of the checkpoint's trial into this trial's folder, before it resumes training.

        The trainer writes ``best.pt`` only when an epoch beats the best so far, which the resumed
        state carries: where the best epoch was the earlier trial's, this trial's folder (and
        store) would otherwise have no ``best.pt`` for ``load_model``.
        """
        if plan.config.checkpoint_dir and resume.path is not None:
            CheckpointStore(plan.config.checkpoint_dir, plan.config.checkpoints).adopt(resume.path.parent, best_only=True)

    def record_finished(
        self, trial: optuna.Trial, plan: TrialPlan, recording: TrialRecording, resume: ResumePoint, model: nn.Module,
        code: dict | None,
    ) -> dict[str, object]:
        """Record a taken-over trial that trained every epoch, training nothing; its closing attributes.

        The result comes from the epochs its checkpoint holds; its costs (``flops.*``,
        ``precision``) from what it stored, where it did (a worker that never reached its closing
        writes stored none, and a count of 0 would be wrong); its checkpoint files are copied into
        this trial's folder (and store), so that ``checkpoint`` names a file that exists.
        """
        recording.restore(resume.records)
        trial.set_user_attr("resumed_from", {"checkpoint": resume.where, "epoch": len(resume.records)})
        self.echo(f"Trial {trial.number}: {resume.where} holds all {plan.config.epochs} epochs; recording them, nothing to train")
        attrs: dict[str, object] = {**model_attrs(model, plan.config.device), **self._stored_costs(trial)}
        attrs |= {"code": code} if code else {}
        if plan.config.checkpoint_dir and resume.path is not None:
            own = CheckpointStore(plan.config.checkpoint_dir, plan.config.checkpoints)
            if own.adopt(resume.path.parent):
                attrs[CHECKPOINT_ATTR] = str(own.last_path if own.last_path.exists() else own.best_path)
            if self.archive is not None:
                uploads = CheckpointUploads(self.archive, own.directory, trial.study.study_name, trial.number)
                uploads.flush()
                uploads.close()
                attrs[ARTIFACTS_ATTR] = uploads.uri
        return recording.finish(attrs, None)

    def _stored_costs(self, trial: optuna.Trial) -> dict[str, object]:
        """The cost attributes that the newest trial this one takes over stored at its end; none if none did."""
        numbers = taken_over_by(self.recorder.frozen(trial))
        taken_over = sorted((t for t in trial.study.get_trials(deepcopy=False) if t.number in numbers),
                            key=lambda t: t.number, reverse=True)
        costs = (PRECISION_ATTR, PRECISION_SPEEDUP_ATTR, "lr_reductions")
        for earlier in taken_over:
            if any(key.startswith("flops.") for key in earlier.user_attrs):
                return {k: v for k, v in earlier.user_attrs.items() if k.startswith("flops.") or k in costs}
        return {}

    def queue_resume(self, trial: optuna.Trial) -> None:
        """Queue a retry of a preempted trial: its parameters, and ``retry_of`` naming every trial it takes over.

        The trials this one took over are named too: preempted before its first checkpoint, it
        has none of its own, and the retry resumes from theirs.
        """
        frozen = self.recorder.frozen(trial)
        numbers = sorted({*taken_over_by(frozen), trial.number})
        trial.study.enqueue_trial(trial_point(frozen), user_attrs={RETRY_OF_ATTR: numbers})
        self.echo(f"Trial {trial.number}: {frozen.user_attrs.get(FAIL_REASON_ATTR, 'preempted')}; "
                  f"queued again {self.resumes_from(trial.study.study_name, numbers)}")

    def resumes_from(self, study_name: str, numbers: list[int]) -> str:
        """Where a retry of trials ``numbers`` starts, as the end of "queued again ..."."""
        local = (CheckpointStore(checkpoint_dir(self.output_dir, study_name, n)).candidates() for n in numbers)
        if any(path.exists() for paths in local for path in paths):  # what ResumeCandidates tries first
            return "to resume from its last checkpoint"
        if self.archive is not None:  # another machine's trial may have stored one there
            return f"to resume from its last checkpoint in {self.archive.shown_url}, if it stored one"
        return "to start afresh: it saved no checkpoint"

    def hand_back(self, trial: optuna.Trial, error: DiskFullError) -> TrialAbandoned:
        """Hand a trial stopped by a full disk back to the queue, as a preempted one; what stops the worker.

        Every later trial would meet the same disk, so the worker stops (``TrialAbandoned``, which
        Optuna does not tell). Where the study database can still be written (the checkpoint
        folder was full), the retry is queued at once and the orchestrator tells the trial FAIL;
        where it cannot (its own disk is full), the trial stays RUNNING and, once space is freed,
        a worker fails it by its stale heartbeat and resumes it, like a killed worker's.
        """
        try:
            self.give_fail_reason(trial, error)
            self.queue_resume(trial)
        except DiskFullError:
            error.outcome = f"trial {trial.number} is left RUNNING, to be resumed once its heartbeat is stale (--grace-period)"
            return TrialAbandoned(trial.number, str(error), error)
        numbers = sorted({*taken_over_by(as_taken(trial)), trial.number})
        error.outcome = f"trial {trial.number} is queued again {self.resumes_from(trial.study.study_name, numbers)}"
        return TrialAbandoned(trial.number, str(error), error, handed_back=True)

    def training_stopped(
        self,
        trial_number: int,
        error: Exception | KeyboardInterrupt | TrialAbandoned,
        epochs: int,
        checkpoint_dir: str | None,
    ) -> Stop:
        """What ``error``, raised while the trial trained (``epochs`` epochs done), means: what it raises and records.

        Call it while handling ``error``: an unexpected error's traceback is echoed. A diverged
        trial is pruned; a trial abandoned, or whose database is gone past ``--db-timeout``, is
        no longer this worker's to write (its retry stores the epochs); a checkpoint that met a
        full disk is a ``DiskFullError``; a signal whose cleanup raised is raised as that signal.
        """
        if isinstance(error, DivergenceError):
            reductions = {"lr_reductions": error.lr_reductions} if error.lr_reductions else {}
            return Stop(optuna.TrialPruned(error.reason), reason=(PRUNE_REASON_ATTR, error.reason), attrs=reductions)
        if isinstance(error, optuna.TrialPruned):
            return Stop(error, reason=(PRUNE_REASON_ATTR, str(error)))
        if isinstance(error, (TrialAbandoned, DatabaseUnavailable)):
            return Stop(error, abandoned=True)
        if isinstance(error, (Preempted, DiskFullError)):
            return Stop(error, reason=(FAIL_REASON_ATTR, self.fail_reason(error, epochs)))
        if is_disk_full(error):  # a checkpoint's write; the study database's arrives as a DiskFullError
            full = DiskFullError(str(checkpoint_dir), f"saving the checkpoint of trial {trial_number}")
            return Stop(full, error, (FAIL_REASON_ATTR, self.fail_reason(full, epochs)))
        reason = (FAIL_REASON_ATTR, self.fail_reason(error, epochs))
        return Stop(interruption(error) or error, reason=reason)

    def trial_stopped(self, trial: optuna.Trial, error: Exception | KeyboardInterrupt) -> BaseException:
        """What the worker raises for a trial that ``error`` stopped, once the trial says why.

        A full disk hands the trial back (``hand_back``); a preempted trial is queued again to
        resume; a pruned trial and a database outage pass as they are; any other error or signal
        gets a ``fail_reason`` where training gave it none, and a signal whose cleanup raised (while
        planning, building, timing steps) stops the search as that signal. A database outage
        past ``--db-timeout``, in training or in these writes, abandons the trial: a preempted
        worker stops waiting for an absent database, and the trial's retry stores its epochs. A
        shorter outage in these writes is raised.
        """
        try:
            if isinstance(error, DiskFullError):
                return self.hand_back(trial, error)
            if isinstance(error, Preempted):
                self.give_fail_reason(trial, error)
                self.queue_resume(trial)
            elif not isinstance(error, (optuna.TrialPruned, DatabaseUnavailable)):
                self.give_fail_reason(trial, error)
                if self.requeue_interrupted and interruption(error) is not None:
                    self.queue_resume(trial)
                error = interruption(error) or error
        except DatabaseUnavailable as unavailable:
            if not unavailable.final:
                raise
            return TrialAbandoned(trial.number, str(unavailable), unavailable)
        if isinstance(error, DatabaseUnavailable) and error.final:
            return TrialAbandoned(trial.number, str(error), error)
        return error

    def give_fail_reason(self, trial: optuna.Trial, error: BaseException) -> None:
        """A ``fail_reason`` for a trial that the objective could not give one.

        A signal or an error while the trial is planned, built or resumed, or one that broke the
        closing records (the FLOPs meter stopped mid-trace), would otherwise leave a FAIL trial
        that says nothing.
        """
        frozen = self.recorder.frozen(trial)
        if FAIL_REASON_ATTR not in frozen.user_attrs:
            self.recorder.set_attrs(trial, {FAIL_REASON_ATTR: self.fail_reason(error, len(frozen.intermediate_values))})

    def fail_reason(self, error: BaseException, epochs: int) -> str:
        """Why ``error`` failed a trial after ``epochs`` epochs; an error's traceback is echoed too."""
        done = f"after {epochs} epoch{'' if epochs == 1 else 's'}"
        if isinstance(error, (Preempted, DiskFullError)):
            return f"{error} {done}"
        interrupt = interruption(error)
        if interrupt is not None:
            return f"interrupted by {interrupt.signal_name} {done}"
        self.echo(traceback.format_exc().rstrip())
        return f"{type(error).__name__}: {error}"
