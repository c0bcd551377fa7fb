"""``TrialPlan``: one sampled point turned into everything its run needs, in one place.

A point is what Optuna holds for a trial: ``model`` and every swept name. The objective, the
LR finder, the probe, the spec's build check and ``load_model`` all split it here, so a swept
name means the same thing on every path. Torch is imported by the methods that build.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from hpsearch.models import get_model
from hpsearch.trainers.config import SETTINGS, TrainConfig

if TYPE_CHECKING:
    from torch import nn

    from hpsearch.trainers.tasks import Task

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
        import torch

        from hpsearch.models import build_model

        if meta:
            with torch.device("meta"):
                return build_model(self.model_name, self.model_params, task.data)
        return build_model(self.model_name, self.model_params, task.data)

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
