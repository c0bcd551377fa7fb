"""Learning-rate schedules: a linear warmup, then a decay of the chosen shape."""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULERS = ("cosine", "linear", "constant", "step", "onecycle")


@dataclass(frozen=True)
class LRSchedule:
    """LR at each optimizer step: warmup to ``peak_lr`` over ``warmup_steps``, then ``kind``.

    ``cosine`` and ``linear`` decay to ``min_lr`` at the last step; ``constant`` stays at the
    peak; ``step`` multiplies by ``gamma`` every ``step_every`` steps; ``onecycle`` warms up from
    ``peak_lr / 25`` along a cosine (as ``torch.optim.lr_scheduler.OneCycleLR``) and then
    follows the cosine decay.
    """

    peak_lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr: float = 0.0
    kind: str = "cosine"
    gamma: float = 0.1
    step_every: int = 1

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            fraction = (step + 1) / self.warmup_steps
            if self.kind == "onecycle":
                start = self.peak_lr / 25
                return start + (self.peak_lr - start) * 0.5 * (1 - math.cos(math.pi * fraction))
            return self.peak_lr * fraction
        after = step - self.warmup_steps
        progress = min(1.0, after / max(1, self.total_steps - self.warmup_steps))
        if self.kind == "constant":
            return self.peak_lr
        if self.kind == "linear":
            return self.peak_lr + (self.min_lr - self.peak_lr) * progress
        if self.kind == "step":
            return self.peak_lr * self.gamma ** (after // max(1, self.step_every))
        return self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))


