"""``TrialPlan``: one sampled point turned into everything its run needs, in one place.

A point is what Optuna holds for a trial: ``model`` and every swept name. The objective, the
LR finder, the probe, the spec's build check and ``load_model`` all split it here, so a swept
name means the same thing on every path. ``TrialPlan.prepare`` then makes the run the objective
fits (``PreparedRun``): the precision, the FLOPs meter, the LR and the trainer, decided and built
once. Torch is imported by the methods that build.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.models import get_model
from hpsearch.trainers.config import SETTINGS, TrainConfig

if TYPE_CHECKING:
    from torch import nn

    from hpsearch.trainers.flops import FlopsMeter, ForwardCount
    from hpsearch.trainers.step_speed import StepTiming
    from hpsearch.trainers.tasks import Task
    from hpsearch.trainers.trainer import FitResult, Trainer

TRAIN_SETTING_NAMES = frozenset(p.name for p in SETTINGS)


# A name kept as its own folder: no separator, no leading dot, short enough for any filesystem.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=-]{0,99}")


def study_folder(study_name: str) -> str:
    """The folder under ``checkpoints/`` for study ``study_name``: always one path component.

    A plain name is its own folder. Any other (``../x``, ``/abs``, ``./s``, 300 characters) is
    sanitized and given ``~`` and a hash of the whole name; a plain name has no ``~``, so no two
    studies share a folder and none reaches outside the output directory.
    """
    if _PLAIN_NAME.fullmatch(study_name):
        return study_name
    slug = re.sub(r"[^A-Za-z0-9._+=-]+", "_", study_name).strip("._")[:60] or "study"
    return f"{slug}~{hashlib.sha256(study_name.encode()).hexdigest()[:16]}"


def checkpoint_dir(output_dir: str, study_name: str, trial_number: int) -> Path:
    """Where a trial keeps ``last.pt`` and ``best.pt``."""
    return Path(output_dir).resolve() / "checkpoints" / study_folder(study_name) / f"trial-{trial_number}"


@dataclass(frozen=True)
class Budget:
    """A configuration's costs, counted on the meta device before anything trains, against the limits."""

    flops_per_sample: float
    params: int
    over: tuple[str, ...]
    # Optuna's constraint values (feasible when every one is <= 0): the sampler learns the boundary.
    constraints: tuple[float, float]


@dataclass
class SharedMeasurements:
    """What the trials of one search measure once and share, kept by whoever runs them (the objective).

    The task's data is fixed within a search, so plans with the same ``architecture`` build the
    same module and trace it once (``flops_counts``), and plans with the same ``step_cost`` take
    the same steps, so ``--precision auto`` times them once (``step_timings``): a sweep over the
    LR or the schedule measures each model once.
    """

    flops_counts: dict[tuple[str, str], dict[Any, ForwardCount]] = field(default_factory=dict)
    step_timings: dict[tuple[str, str, int, str, str], StepTiming] = field(default_factory=dict)


@dataclass(frozen=True)
class PreparedRun:
    """A planned trial ready to fit: its model, the FLOPs meter on it, the trainer, and what was decided for them."""

    model: nn.Module
    meter: FlopsMeter
    trainer: Trainer
    # --precision auto's timing of the model's steps; None where nothing was timed (an explicit precision, or a
    # machine whose matmuls are fastest in fp32).
    timing: StepTiming | None
    # The LR range test's suggestion, which the trainer uses; None unless the LR is "auto".
    suggested_lr: float | None
    # Why the trainer uses the default LR although the LR is "auto": the test suggested none.
    lr_fallback: str | None = None

    def costs(self) -> dict[str, object]:
        """The model's costs so far: ``params.count`` and the ``flops.*`` statistics."""
        from hpsearch.search.trial_attrs import model_costs

        return model_costs(self.model, self.meter)

    def attrs(self, result: FitResult | None, trained: bool) -> dict[str, object]:
        """What the run leaves on its trial at the end: parameters, FLOPs, precision, worker, checkpoint.

        ``precision.speedup`` too, where ``auto`` timed the model's steps.
        """
        from hpsearch.search.trial_attrs import trainer_attrs
        from hpsearch.storage.attributes import PRECISION_SPEEDUP_ATTR

        attrs = trainer_attrs(self.trainer, self.model, self.meter, result, trained)
        if self.timing is not None:
            attrs[PRECISION_SPEEDUP_ATTR] = round(self.timing.speedup, 3)
        return attrs


@dataclass(frozen=True)
class TrialPlan:
    """What one trial runs: a model and its hyperparameters, the step's, and the trainer's config.

    A swept name is a trainer setting if ``TrainConfig`` declares it, else a hyperparameter of
    the task's step if the step declares it, else the model's: the order ``parse_sweep`` resolves
    names in.
    """

    model_name: str
    model_params: dict[str, Any]
    step_params: dict[str, Any]
    config: TrainConfig

    @classmethod
    def from_point(
        cls,
        point: Mapping[str, Any],
        train_config: TrainConfig,
        step_names: Iterable[str] = (),
        checkpoints: Path | None = None,
    ) -> TrialPlan:
        """The plan for ``point`` under the study's ``train_config``; ``checkpoints`` is where it saves."""
        steps = set(step_names)
        model_name = str(point["model"])
        trainer = {k: v for k, v in point.items() if k in TRAIN_SETTING_NAMES}
        step = {k: v for k, v in point.items() if k in steps and k not in trainer}
        spec = get_model(model_name)
        model = {
            k: v
            for k, v in point.items()
            if k != "model" and k not in trainer and k not in step and spec.param(k) is not None
        }
        if checkpoints is not None:
            trainer["checkpoint_dir"] = str(checkpoints)
        return cls(model_name, model, step, train_config.with_overrides(trainer) if trainer else train_config)

    @property
    def hparams(self) -> dict[str, Any]:
        """The hyperparameters the trainer hands the step: the model's and the step's own."""
        return {**self.model_params, **self.step_params}

    @property
    def architecture(self) -> tuple[str, str]:
        """Plans with the same key build the same module, so they share FLOPs counts."""
        return self.model_name, repr(sorted(self.model_params.items()))

    @property
    def step_cost(self) -> tuple[str, str, int, str, str]:
        """Plans with the same key take training steps of the same cost, so they share ``auto``'s precision timing.

        The model and its hyperparameters, the step's, and the settings that change what a step
        computes (batch size, optimizer, device); not the LR or the schedule, which a sweep over
        them would otherwise time again for nothing.
        """
        config = self.config
        return self.model_name, repr(sorted(self.hparams.items())), config.batch_size, config.optimizer, config.device

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in {"model": self.model_name, **self.hparams}.items())

    def build_model(self, task: Task, meta: bool = False) -> nn.Module:
        """The model for ``task``'s data (on the meta device: no memory, no time); seed first for a reproducible one."""
        from hpsearch.models import build_model
        from hpsearch.trainers.meta import meta_device

        if meta:
            with meta_device():
                return build_model(self.model_name, self.model_params, task.data)
        return build_model(self.model_name, self.model_params, task.data)

    def initial_model(self, task: Task) -> nn.Module:
        """The model the trial trains: built after seeding with the plan's seed, so every run starts alike."""
        from hpsearch.trainers.trainer import seed_everything

        seed_everything(self.config.seed)
        return self.build_model(task)

    def prepare(
        self,
        task: Task,
        model: nn.Module,
        measured: SharedMeasurements,
        lr_finder: bool = False,
        suggested_lr: float | None = None,
    ) -> PreparedRun:
        """The run of ``model`` (``initial_model``'s) that the trial fits; the caller adds the trainer's callbacks.

        The precision is the plan's, ``auto`` decided on the model's own steps; the FLOPs meter
        shares the counts of the plan's architecture; with ``lr_finder`` the trainer takes the LR
        range test's suggestion: ``suggested_lr`` where an earlier try of the trial found one, so a
        retry trains with the same LR; the default LR where the test suggests none
        (``lr_fallback``). ``measured`` keeps what other plans may reuse.
        """
        from hpsearch.trainers.flops import FlopsMeter
        from hpsearch.trainers.trainer import Trainer

        config, timing = self._in_precision(task, model, measured.step_timings)
        meter = FlopsMeter(model, counts=measured.flops_counts.setdefault(self.architecture, {}))
        fallback = None
        if lr_finder and suggested_lr is None:
            from hpsearch.trainers.lr_finder import find_lr  # loaded by the searches that run it only

            # The test's own trainer: the trial's is built with the LR it suggests.
            result = find_lr(Trainer(model, task, config, hparams=self.hparams))
            suggested_lr = result.suggested
            if suggested_lr is None:
                fallback = f"{result.no_suggestion()}; trained with the default lr={config.lr:g} (set lr to choose one)"
        if lr_finder and suggested_lr is not None:
            config = config.with_overrides({"lr": suggested_lr})
        trainer = Trainer(model, task, config, flops_meter=meter, hparams=self.hparams)
        return PreparedRun(model, meter, trainer, timing, suggested_lr if lr_finder else None, fallback)

    def lr_test_trainer(self, task: Task, model: nn.Module) -> Trainer:
        """The trainer ``hpsearch lr-find`` tests LRs with: the trial's, in its precision, without a FLOPs meter."""
        from hpsearch.trainers.trainer import Trainer

        return Trainer(model, task, self._in_precision(task, model, {})[0], hparams=self.hparams)

    def _in_precision(self, task: Task, model: nn.Module, timings: dict) -> tuple[TrainConfig, StepTiming | None]:
        """The plan's settings in the precision the trial trains in: ``auto`` times the model's own steps."""
        from hpsearch.trainers.step_speed import decide_precision

        precision, timing = decide_precision(model, task, self.config, self.hparams, timings, self.step_cost)
        return self.config.with_overrides({"precision": precision}), timing

    def budget(self, task: Task, max_flops: float | None, max_params: int | None) -> Budget:
        """The model's FLOPs per sample and parameter count, and which of the limits they pass."""
        from hpsearch.search.probe import example_inputs
        from hpsearch.trainers.flops import meta_forward_flops
        from hpsearch.trainers.trainer import count_parameters

        model = self.build_model(task, meta=True)
        flops, params = meta_forward_flops(model, example_inputs(task, device="meta")), count_parameters(model)
        limits = (("flops per sample", flops, max_flops), ("params", params, max_params))
        over = tuple(
            f"{name} {value:,.0f} > {limit:,.0f}"
            for name, value, limit in limits
            if limit is not None and value > limit
        )
        excess = (flops - max_flops if max_flops else 0.0, params - max_params if max_params else 0.0)
        return Budget(flops, params, over, excess)
