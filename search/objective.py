"""The objective: one Optuna trial becomes one run of the shared trainer.

It plans the trial and prepares its run (``search/trial.py``), fits it, and records it
(``search/recording.py``) through the storage's recorder; nothing else. What a trial takes over
from earlier ones, what an error that stops it means, and what it hands back to the queue are
``search/handover.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from hpsearch.search.checkpoint_sync import CheckpointUploads
from hpsearch.search.handover import TrialHandover
from hpsearch.search.pareto import ParetoPruner
from hpsearch.search.plugins import trial_code
from hpsearch.search.recording import TrialAbandoned, TrialRecording
from hpsearch.search.resolved import ResolvedSpec
from hpsearch.search.signals import Preemption
from hpsearch.search.trial import SharedMeasurements, TrialPlan, checkpoint_dir
from hpsearch.storage.artifacts import CheckpointArchive
from hpsearch.storage.attributes import ARTIFACTS_ATTR, LR_FALLBACK_ATTR, LR_SUGGESTED_ATTR
from hpsearch.storage.optuna_seam import params_in_one_request

if TYPE_CHECKING:
    from hpsearch.storage.recorder import TrialRecorder
    from hpsearch.trainers.records import EpochRecord
    from hpsearch.trainers.trainer import FitResult

# Re-exported: the orchestrator catches it, audit and tests name the checkpoint place.
__all__ = ["Objective", "TrialAbandoned", "checkpoint_dir"]


class Objective:
    """Plans a sampled configuration, trains it, and records what happened on the trial.

    At the end, whatever the outcome, the trial carries ``lr_history``, ``epochs_run``,
    ``params.count``, ``precision`` (and ``precision.speedup`` where ``auto`` timed the model's
    steps), ``worker``, ``checkpoint``, the ``flops.*`` statistics, and ``prune_reason`` or
    ``fail_reason``. A trial that takes over an earlier one (a heartbeat
    retry of a killed trial, or a grid point queued again after its trial failed) resumes from
    that trial's last readable checkpoint.

    With ``preemption``, a stop request ends training at the next epoch end or, past its grace,
    at the next optimizer step; the trial then fails with ``fail_reason`` "preempted by SIGTERM
    after N epochs", and a retry with its parameters is queued first, which resumes from its
    checkpoint (``retry_of``).
    """

    def __init__(
        self,
        resolved: ResolvedSpec,
        recorder: TrialRecorder,
        echo: Callable[[str], None] = print,
        preemption: Preemption | None = None,
    ) -> None:
        self.resolved = resolved
        self.recorder = recorder
        self.echo = echo
        self.preemption = preemption
        # Shared by this search's trials: each architecture's FLOPs traced, each step cost timed, once.
        self.measured = SharedMeasurements()
        config = resolved.train_config
        self.pareto = ParetoPruner.for_study(resolved.pruner, resolved.goals, config.epochs, config.warmup_epochs)
        # --artifacts: checkpoints go to the store too, and retries on other machines fetch them from there.
        artifacts = resolved.spec.artifacts
        self.archive = CheckpointArchive.open(artifacts, echo=echo) if artifacts else None
        # Only workers take preemption requests: they also queue a Ctrl-C'd trial again at once.
        self.handover = TrialHandover(recorder, resolved.spec.output_dir, self.archive, echo,
                                      requeue_interrupted=preemption is not None)

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        try:
            return self._run(trial)
        except (Exception, KeyboardInterrupt) as error:  # a notebook's interrupt too
            # The trial says why it stopped, and one that can resume is queued again (search/handover.py).
            raises = self.handover.trial_stopped(trial, error)
            if raises is error:
                raise
            raise raises from None

    def plan(self, trial: optuna.Trial) -> TrialPlan:
        """The trial's sampled point, planned; its checkpoints go under the output directory."""
        resolved = self.resolved
        place = checkpoint_dir(resolved.spec.output_dir, trial.study.study_name, trial.number)
        with params_in_one_request(trial):  # one request behind the storage proxy, not one per parameter
            point = resolved.sweep.suggest(trial)
        return TrialPlan.from_point(point, resolved.train_config, (p.name for p in resolved.task.step_params), place)

    def _run(self, trial: optuna.Trial) -> float | list[float]:
        resolved, spec = self.resolved, self.resolved.spec
        plan = self.plan(trial)
        self.echo(f"Trial {trial.number}: " + ", ".join(f"{k}={v}" for k, v in trial.params.items()))
        recording = TrialRecording(
            trial, self.recorder, spec.metric, plan.config.epochs, resolved.pruner, resolved.multi_objective, self.echo,
            self.pareto,
        )
        if spec.max_flops is not None or spec.max_params is not None:
            recording.check_budget(plan.budget(resolved.task, spec.max_flops, spec.max_params))
        model = plan.initial_model(resolved.task)
        resume = self.handover.resume_point(trial, model)
        code = trial_code(resolved.code, plan.model_name, resolved.task.name)
        if resume.records and resume.records[-1].epoch >= plan.config.epochs:
            attrs = self.handover.record_finished(trial, plan, recording, resume, model, code)
            return recording.values(resolved.goals, attrs)
        resume_from, state, restored = resume.where, resume.state, resume.records
        self.handover.carry_best(resume, plan)
        run = plan.prepare(resolved.task, model, self.measured, spec.lr_finder, trial.user_attrs.get(LR_SUGGESTED_ATTR))
        if run.timing is not None:
            speed = f"{run.timing.lower} steps ran {run.timing.speedup:.2f}x as fast as fp32's"
            if run.timing.kept_from:
                speed += f", timed by an earlier search at {run.timing.kept_from} UTC"
            self.echo(f"Trial {trial.number}: precision auto: {run.timing.chosen} ({speed})")
        if run.suggested_lr is not None:
            trial.set_user_attr(LR_SUGGESTED_ATTR, run.suggested_lr)  # a retry of this trial trains with the same LR
            self.echo(f"Trial {trial.number}: LR range test suggests lr={run.suggested_lr:.3g}")
        elif run.lr_fallback is not None:
            trial.set_user_attr(LR_FALLBACK_ATTR, run.lr_fallback)
            self.echo(f"Trial {trial.number}: {run.lr_fallback}")
        recording.costs = run.costs
        uploads = None
        if self.archive is not None and plan.config.checkpoint_dir and plan.config.checkpoints != "none":
            uploads = CheckpointUploads(self.archive, Path(plan.config.checkpoint_dir), trial.study.study_name, trial.number)
        trainer = run.trainer
        # Uploads first: they start in the background before the epoch's records are written.
        trainer.callbacks += [*([uploads.epoch_ended] if uploads else []), recording.epoch_ended]
        trainer.step_checks.append(lambda _step: recording.check_heartbeat())
        preemption = self.preemption
        if preemption is not None:
            preemption.check(at_epoch_end=True)  # asked to stop while the trial was being set up

            def stop_after_epoch(record: EpochRecord) -> None:
                # After the recording's callback: the epoch and its checkpoint are stored. Not after
                # the last epoch, whose trial is complete.
                if record.epoch < plan.config.epochs:
                    preemption.check(at_epoch_end=True)

            trainer.callbacks.append(stop_after_epoch)
            trainer.step_checks.append(lambda _step: preemption.check())
        result: FitResult | None = None
        reason: tuple[str, str] | None = None
        stopped_attrs: dict[str, Any] = {}
        abandoned = False  # then the trial is no longer this worker's to write
        try:
            if resume_from is not None:
                recording.restore(restored)
                trial.set_user_attr("resumed_from", {"checkpoint": str(resume_from), "epoch": len(restored)})
                self.echo(f"Trial {trial.number}: resuming from {resume_from} after epoch {len(restored)}")
            result = trainer.fit(resume_from=state)  # loaded once, when it was checked
            if uploads is not None:
                uploads.flush()  # a COMPLETE trial's best.pt is in the store before anyone can load it
        except (Exception, KeyboardInterrupt, TrialAbandoned) as error:
            # What the error means for the trial: pruned, failed, abandoned (search/handover.py).
            epochs = len(recording.records)
            stop = self.handover.training_stopped(trial.number, error, epochs, plan.config.checkpoint_dir)
            reason, abandoned, stopped_attrs = stop.reason, stop.abandoned, stop.attrs
            if stop.raises is error:
                raise
            raise stop.raises from stop.cause
        finally:
            # Whatever stopped training, the epochs it finished are stored before the trial ends.
            upload_error = uploads.close() if uploads is not None else None
            if upload_error is not None and result is None:
                self.echo(f"Trial {trial.number}: checkpoints not stored in {self.archive.shown_url}: {upload_error}")
            if not abandoned:
                attrs = run.attrs(result, bool(recording.records)) | stopped_attrs | ({"code": code} if code else {})
                if uploads is not None and recording.records:
                    attrs[ARTIFACTS_ATTR] = uploads.uri
                attrs = recording.finish(attrs, reason)
                stats = run.meter.stats()
                if stats.forward_passes:
                    self.echo(stats.format_block())
        return recording.values(resolved.goals, attrs)
