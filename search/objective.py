"""The objective: one Optuna trial becomes one run of the shared trainer."""

from __future__ import annotations

import os
import socket
import traceback
from pathlib import Path
from typing import Callable

import optuna
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback

from hpsearch.models import build_model
from hpsearch.search.probe import example_inputs
from hpsearch.search.signals import Interrupted, interruption
from hpsearch.search.spec import COST_OBJECTIVES, ResolvedSpec
from hpsearch.storage.engine import QueuedRDBStorage
from hpsearch.storage.epoch_metrics import EpochMetricsTable
from hpsearch.storage.optuna_seam import trial_id
from hpsearch.storage.retry import DatabaseUnavailable
from hpsearch.trainers.checkpoints import CheckpointStore, check_training_state, first_readable
from hpsearch.trainers.config import SETTINGS
from hpsearch.trainers.flops import FlopsMeter, meta_forward_flops
from hpsearch.trainers.hardware import device_label
from hpsearch.trainers.lr_finder import find_lr
from hpsearch.trainers.records import EpochRecord, format_epoch_line
from hpsearch.trainers.trainer import (
    DivergenceError,
    FitResult,
    Trainer,
    count_parameters,
    seed_everything,
)

TRAIN_SETTING_NAMES = frozenset(p.name for p in SETTINGS)


class TrialAbandoned(BaseException):
    """This worker stops training a trial it may no longer own, and leaves the trial RUNNING.

    Raised when the trial's heartbeat could not be stored for nearly the grace period (another
    worker may soon fail the trial and take it over), or when the database has been away past
    ``--db-timeout`` (``error``, a final ``DatabaseUnavailable``: the worker then stops). A
    ``BaseException`` so that Optuna neither catches it nor tells the trial's state: the trial
    goes stale, and its heartbeat retry resumes from its last checkpoint, like a killed worker's.
    """

    def __init__(self, number: int, reason: str, error: DatabaseUnavailable | None = None) -> None:
        super().__init__(number, reason)
        self.number, self.reason, self.error = number, reason, error


def checkpoint_dir(output_dir: str, study_name: str, trial_number: int) -> Path:
    """Where a trial keeps ``last.pt`` and ``best.pt``."""
    return Path(output_dir).resolve() / "checkpoints" / study_name / f"trial-{trial_number}"


class Objective:
    """Samples a configuration, trains it, and records what happened on the trial.

    Every epoch: a line through ``echo``, a row in the per-epoch table, and ``trial.report``
    of the monitored metric followed by the pruner's verdict (but for the last epoch, whose
    work is done). At the end, whatever the outcome: ``lr_history``, ``epochs_run``,
    ``params.count``, ``precision``, ``worker``, ``checkpoint``, the ``flops.*`` statistics,
    and ``prune_reason`` or ``fail_reason``.
    A trial that takes over an earlier one (a heartbeat retry of a killed trial, or a grid point
    queued again after its trial failed) resumes from that trial's last readable checkpoint.
    """

    def __init__(
        self,
        resolved: ResolvedSpec,
        epoch_table: EpochMetricsTable,
        storage: QueuedRDBStorage,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.resolved = resolved
        self.epoch_table = epoch_table
        # FLOPs counts per model and hyperparameters: the task's data is fixed within a search, so
        # these make the same module, and a sweep over lr or the trainer's settings traces it once.
        self.flops_counts: dict[tuple[str, str], dict] = {}
        self.storage = storage
        self.echo = echo

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._run(trial)
        except DatabaseUnavailable as error:
            if not error.final:
                raise
            raise TrialAbandoned(trial.number, str(error), error) from None

    def _run(self, trial: optuna.Trial) -> float:
        resolved, spec, metric = self.resolved, self.resolved.spec, self.resolved.spec.metric
        model_name, model_params, shared_params = resolved.sweep.suggest(trial)
        trainer_params = {k: v for k, v in shared_params.items() if k in TRAIN_SETTING_NAMES}
        step_params = {k: v for k, v in shared_params.items() if k not in TRAIN_SETTING_NAMES}
        own_checkpoints = checkpoint_dir(spec.output_dir, trial.study.study_name, trial.number)
        config = resolved.train_config.with_overrides({**trainer_params, "checkpoint_dir": str(own_checkpoints)})
        self.echo(f"Trial {trial.number}: " + ", ".join(f"{k}={v}" for k, v in trial.params.items()))
        if spec.max_flops is not None or spec.max_params is not None:
            self._check_budget(trial, model_name, model_params)
        seed_everything(config.seed)
        model = build_model(model_name, model_params, resolved.task.data)
        resume_from, state, restored = self._checkpoint_to_resume(trial, model)
        hparams = {**model_params, **step_params}
        architecture = (model_name, repr(sorted(model_params.items())))
        meter = FlopsMeter(model, counts=self.flops_counts.setdefault(architecture, {}))
        if resolved.spec.lr_finder:
            suggested = trial.user_attrs.get("lr_finder.suggested")
            if suggested is None:
                suggested = find_lr(Trainer(model, resolved.task, config, hparams=hparams)).suggested
            trial.set_user_attr("lr_finder.suggested", suggested)
            self.echo(f"Trial {trial.number}: LR range test suggests lr={suggested:.3g}")
            config = config.with_overrides({"lr": suggested})
        trainer = Trainer(model, resolved.task, config, [], meter, hparams)
        records: list[EpochRecord] = []
        # Epochs trained but not yet stored: while the database is away, training goes on.
        unstored: list[EpochRecord] = []

        def on_epoch_end(record: EpochRecord) -> None:
            records.append(record)
            self.echo(format_epoch_line(record))
            self._check_heartbeat(trial)
            unstored.append(record)
            try:
                with self.storage.retry.patience(0):  # a first failure defers the writes to the next epoch
                    self._store(trial, unstored)
                    # After the last epoch there is nothing left to save: the trial completes.
                    prune = not resolved.multi_objective and record.epoch < config.epochs and trial.should_prune()
            except DatabaseUnavailable as error:
                if error.final:
                    raise
                self.echo(f"Trial {trial.number}: epoch {record.epoch} is kept and stored once the database is back; training goes on")
                return
            if prune:
                value = record.value(metric)
                raise optuna.TrialPruned(f"pruned by the {spec.pruner} pruner at epoch {record.epoch}: {metric}={value:.4g}")

        trainer.callbacks.append(on_epoch_end)
        trainer.step_checks.append(lambda _step: self._check_heartbeat(trial))
        result: FitResult | None = None
        reason: tuple[str, str] | None = None
        abandoned = False  # then the trial is no longer this worker's to write
        try:
            if resume_from is not None:
                records.extend(self._resume(trial, resume_from, restored))
            result = trainer.fit(resume_from=state)  # loaded once, when it was checked
        except DivergenceError as error:
            reason = ("prune_reason", error.reason)
            raise optuna.TrialPruned(error.reason) from None
        except optuna.TrialPruned as error:
            reason = ("prune_reason", str(error))
            raise
        except (TrialAbandoned, DatabaseUnavailable):
            abandoned = True  # a final DatabaseUnavailable: past --db-timeout, the retry stores the epochs
            raise
        except (Interrupted, Exception) as error:
            interrupt = interruption(error)
            if interrupt is None:
                reason = ("fail_reason", f"{type(error).__name__}: {error}")
                self.echo(traceback.format_exc().rstrip())
                raise
            reason = ("fail_reason", f"interrupted by {interrupt.signal_name} after {len(records)} epochs")
            raise interrupt from None
        finally:
            # Whatever stopped training, the epochs it finished are stored before the trial ends.
            if not abandoned:
                self._check_heartbeat(trial)
                self._store(trial, unstored)
                attrs = self._record(trial, trainer, model, meter, records, result, reason)
        values = [attrs[COST_OBJECTIVES[g.name]] if g.is_cost else records[-1].value(g.name) for g in resolved.goals]
        return values if resolved.multi_objective else values[0]

    def _store(self, trial: optuna.Trial, unstored: list[EpochRecord]) -> None:
        """Store the epochs in ``unstored``, oldest first (its row, then its report), removing each once stored.

        A retry of a half-stored epoch writes it again: the row is an upsert, and a step Optuna
        already holds is not reported twice.
        """
        while unstored:
            record = unstored[0]
            self.epoch_table.write(trial_id(trial), record.as_row())
            if not self.resolved.multi_objective:  # Optuna takes no intermediate values from those
                trial.report(record.value(self.resolved.spec.metric), record.epoch)
            unstored.pop(0)

    def _check_heartbeat(self, trial: optuna.Trial) -> None:
        """``TrialAbandoned`` once this worker has gone so long without storing the trial's heartbeat
        that another worker may soon fail the trial and take it over.

        The margin is one heartbeat interval: a peer fails the trial only when the stored heartbeat
        is older than the grace period, and the stored one is never newer than this process's last success.
        """
        interval, grace = self.storage.heartbeat_interval, self.storage.grace_period
        if interval is None:
            return
        age = self.storage.heartbeat_age(trial_id(trial))
        if age > (grace or 2 * interval) - interval:
            why = self.storage.heartbeat_errors.get(trial_id(trial), "no answer")
            reason = f"its heartbeat could not be stored for {age:.0f} s ({why})"
            self._note_abandoned(trial, reason)
            raise TrialAbandoned(trial.number, reason)

    def _note_abandoned(self, trial: optuna.Trial, reason: str) -> None:
        """Say why on the trial, if the database answers at once; the trial may already be another worker's."""
        try:
            with self.storage.retry.patience(0):
                self.storage.set_trial_user_attrs(trial_id(trial), {"fail_reason": f"abandoned: {reason}"})
        except (DatabaseUnavailable, optuna.exceptions.UpdateFinishedTrialError):
            pass

    def _check_budget(self, trial: optuna.Trial, model_name: str, model_params: dict[str, object]) -> None:
        """Reject a configuration over ``--max-flops``/``--max-params`` before anything is trained.

        The model is built and counted on the meta device; the excess goes to the sampler as
        Optuna constraints, so it learns to avoid the region.
        """
        spec, task = self.resolved.spec, self.resolved.task
        with torch.device("meta"):
            model = build_model(model_name, model_params, task.data)
        flops, params = meta_forward_flops(model, example_inputs(task, device="meta")), count_parameters(model)
        over = [
            (name, value, limit)
            for name, value, limit in (("flops per sample", flops, spec.max_flops), ("params", params, spec.max_params))
            if limit is not None and value > limit
        ]
        trial.set_user_attr("budget", {"flops_per_sample": flops, "params": params})
        trial.set_user_attr(
            "constraints",
            [flops - spec.max_flops if spec.max_flops else 0.0, params - spec.max_params if spec.max_params else 0.0],
        )
        if over:
            reason = "over budget: " + ", ".join(f"{name} {value:,.0f} > {limit:,.0f}" for name, value, limit in over)
            trial.set_user_attr("prune_reason", reason)
            trial.set_user_attr("epochs_run", 0)
            self.echo(f"Trial {trial.number} pruned: {reason}")
            raise optuna.TrialPruned(reason)

    def _checkpoint_to_resume(
        self, trial: optuna.Trial, model: torch.nn.Module
    ) -> tuple[Path | None, dict | None, list[EpochRecord]]:
        """The newest readable checkpoint of the trials this one takes over: its path, state and epoch records.

        Those trials are the ones a heartbeat retry replaces (Optuna's retry history) and, for a
        grid point queued again, the failed trials of the same point (``retry_of``, written by
        ``Orchestrator._queue_grid``). For each, newest first, ``last.pt`` then ``prev.pt`` is
        tried; a file that cannot be read, is no training checkpoint or belongs to another model
        is passed over, and ``checkpoint_fallback`` says which file and why, and where training
        starts instead. With nothing readable the trial starts fresh.
        """
        frozen = self.storage.get_trial(trial_id(trial))
        numbers = {*RetryHeartbeatStaleTrialCallback.retry_history(frozen), *frozen.user_attrs.get("retry_of", [])}
        if not numbers:
            return None, None, []
        study, output_dir = trial.study.study_name, self.resolved.spec.output_dir
        candidates = [path for number in sorted(numbers, reverse=True)
                      for path in CheckpointStore(checkpoint_dir(output_dir, study, number)).candidates()]
        expected = model.state_dict()
        parsed: list[EpochRecord] = []

        def check(state: dict) -> None:
            check_training_state(state, expected)
            parsed[:] = [EpochRecord(**r) for r in state["progress"]["records"]]

        found = first_readable(candidates, check)
        if found.skipped:
            outcome = f"resumed from {found.path}" if found.path is not None else "started fresh from epoch 1"
            fallback = "; ".join(f"unreadable checkpoint {skipped}" for skipped in found.skipped) + f"; {outcome}"
            trial.set_user_attr("checkpoint_fallback", fallback)
            self.echo(f"Trial {trial.number}: {fallback}")
        return found.path, found.state, parsed if found.path is not None else []

    def _resume(self, trial: optuna.Trial, path: Path, restored: list[EpochRecord]) -> list[EpochRecord]:
        """Carry the taken-over trial's finished epochs over to this one, without training them again.

        A heartbeat retry inherited the intermediate values the killed trial reported; an epoch
        it checkpointed but had not yet reported, and every epoch of a grid point queued again,
        is reported here.
        """
        reported = self.storage.get_trial(trial_id(trial)).intermediate_values
        for record in restored:
            self.epoch_table.write(trial_id(trial), record.as_row())
            if record.epoch not in reported and not self.resolved.multi_objective:
                trial.report(record.value(self.resolved.spec.metric), record.epoch)
        trial.set_user_attr("resumed_from", {"checkpoint": str(path), "epoch": len(restored)})
        self.echo(f"Trial {trial.number}: resuming from {path} after epoch {len(restored)}")
        return restored

    def _record(
        self,
        trial: optuna.Trial,
        trainer: Trainer,
        model: torch.nn.Module,
        meter: FlopsMeter,
        records: list[EpochRecord],
        result: FitResult | None,
        reason: tuple[str, str] | None,
    ) -> dict[str, object]:
        """Set the trial's user attributes, print its FLOPs block, and return the attributes."""
        stats = meter.stats()
        attrs = {
            "params.count": count_parameters(model),
            "epochs_run": len(records),
            "lr_history": [r.lr for r in records],
            "precision": trainer.precision,
            "worker": f"{socket.gethostname()}:{os.getpid()}:{device_label(trainer.device)}",
            **stats.as_user_attrs(),
        }
        if records and trainer.checkpoints is not None:
            attrs["checkpoint"] = str(trainer.checkpoints.last_path)
        if result is not None and result.lr_reductions:
            attrs["lr_reductions"] = result.lr_reductions
        if reason is not None:
            attrs[reason[0]] = reason[1]
            self.echo(f"Trial {trial.number} {'pruned' if reason[0] == 'prune_reason' else 'failed'}: {reason[1]}")
        self.storage.set_trial_user_attrs(trial_id(trial), attrs)
        if stats.forward_passes:
            self.echo(stats.format_block())
        return attrs
