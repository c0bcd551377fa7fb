"""The objective: one Optuna trial becomes one run of the shared trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import optuna

from hpsearch.models import build_model
from hpsearch.search.spec import ResolvedSpec
from hpsearch.storage.epoch_metrics import EpochMetricsTable
from hpsearch.trainers.flops import FlopsMeter
from hpsearch.trainers.records import EpochRecord, format_epoch_line
from hpsearch.trainers.lr_finder import find_lr
from hpsearch.trainers.trainer import DivergenceError, FitResult, Trainer, count_parameters, seed_everything


class Objective:
    """Samples a configuration, trains it, and records what happened on the trial.

    Every epoch: a line through ``echo``, a row in the per-epoch table, and
    ``trial.report`` of the monitored metric followed by the pruner's verdict. At the end,
    whether the trial completed or was pruned: ``lr_history``, ``epochs_run``,
    ``params.count``, the ``flops.*`` statistics and, when pruned, ``prune_reason``.
    """

    def __init__(self, resolved: ResolvedSpec, epoch_table: EpochMetricsTable, echo: Callable[[str], None] = print) -> None:
        self.resolved = resolved
        self.epoch_table = epoch_table
        self.echo = echo

    def __call__(self, trial: optuna.Trial) -> float:
        resolved, metric = self.resolved, self.resolved.spec.metric
        model_name, model_params, trainer_params = resolved.sweep.suggest(trial)
        checkpoints = Path(resolved.spec.output_dir) / "checkpoints" / trial.study.study_name / f"trial-{trial.number}"
        config = resolved.train_config.with_overrides({**trainer_params, "checkpoint_dir": str(checkpoints)})
        seed_everything(config.seed)
        model = build_model(model_name, model_params, resolved.task.data)
        if resolved.spec.lr_finder:
            suggested = find_lr(model, resolved.task, config).suggested
            trial.set_user_attr("lr_finder.suggested", suggested)
            self.echo(f"Trial {trial.number}: LR range test suggests lr={suggested:.3g}")
            config = config.with_overrides({"lr": suggested})
        meter = FlopsMeter(model)
        records: list[EpochRecord] = []
        result: FitResult | None = None

        def on_epoch_end(record: EpochRecord) -> None:
            records.append(record)
            self.echo(format_epoch_line(record))
            self.epoch_table.write(trial._trial_id, record.as_row())
            value = record.value(metric)
            trial.report(value, record.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned by the {resolved.spec.pruner} pruner at epoch {record.epoch}: {metric}={value:.4g}")

        shown = ", ".join(f"{k}={v}" for k, v in trial.params.items())
        self.echo(f"Trial {trial.number}: {shown}")
        prune_reason = None
        trainer = Trainer(model, resolved.task, config, [on_epoch_end], meter)
        try:
            result = trainer.fit()
        except DivergenceError as error:
            prune_reason = error.reason
            raise optuna.TrialPruned(error.reason) from None
        except optuna.TrialPruned as error:
            prune_reason = str(error)
            raise
        finally:
            stats = meter.stats()
            attrs = {
                "params.count": count_parameters(model),
                "epochs_run": len(records),
                "lr_history": [r.lr for r in records],
                "precision": trainer.precision,
                **stats.as_user_attrs(),
            }
            if records:
                attrs["checkpoint"] = str(trainer.checkpoints.last_path)
            if result is not None and result.lr_reductions:
                attrs["lr_reductions"] = result.lr_reductions
            if prune_reason is not None:
                attrs["prune_reason"] = prune_reason
                self.echo(f"Trial {trial.number} pruned: {prune_reason}")
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            if records:
                self.echo(stats.format_block())
        return records[-1].value(metric)
