"""The trainer's settings and the schema of those a sweep may change."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from hpsearch.models import HyperParam


@dataclass(frozen=True)
class TrainConfig:
    """Everything the trainer needs besides the model and the task.

    ``early_stopping_patience`` > 0 stops after that many epochs without improvement of
    ``monitor``. ``divergence_factor`` > 0 treats a batch loss and running loss both above that
    multiple of the best running loss (after the guard's first 2 steps) as divergence; ``on_divergence`` is ``"prune"`` (stop) or
    ``"reduce-lr"`` (restore the last good epoch, halve the LR, at most
    ``max_lr_reductions`` times). ``checkpoint_dir`` keeps ``last.pt`` and ``best.pt``.
    """

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    min_lr: float = 0.0
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    grad_accum_steps: int = 1
    early_stopping_patience: int = 0
    monitor: str = "val_loss"
    divergence_factor: float = 10.0
    on_divergence: str = "prune"
    max_lr_reductions: int = 3
    compile: bool = False
    deterministic: bool = False
    checkpoint_dir: str | None = None

    def with_overrides(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        """A copy with ``overrides`` applied; unknown names are an error."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"the trainer has no setting {', '.join(unknown)}")
        return replace(self, **dict(overrides))


# The trainer settings a sweep may search over; the defaults mirror TrainConfig's.
TRAINER_PARAMS: tuple[HyperParam, ...] = (
    HyperParam("lr", "float", TrainConfig.lr, "peak learning rate of AdamW", low=0.0),
    HyperParam("weight_decay", "float", TrainConfig.weight_decay, "AdamW weight decay", low=0.0),
    HyperParam("batch_size", "int", TrainConfig.batch_size, "examples per step", low=1),
    HyperParam("warmup_epochs", "float", TrainConfig.warmup_epochs, "linear warmup length in epochs", low=0.0),
    HyperParam("min_lr", "float", TrainConfig.min_lr, "learning rate at the end of the cosine decay", low=0.0),
    HyperParam("grad_clip", "float", TrainConfig.grad_clip, "max gradient norm; 0 turns clipping off", low=0.0),
    HyperParam("label_smoothing", "float", TrainConfig.label_smoothing, "cross-entropy label smoothing", low=0.0, high=1.0),
    HyperParam("grad_accum_steps", "int", TrainConfig.grad_accum_steps, "micro-batches per optimizer step", low=1),
)


def trainer_param(name: str) -> HyperParam | None:
    """The sweepable trainer setting called ``name``, if there is one."""
    return next((p for p in TRAINER_PARAMS if p.name == name), None)
