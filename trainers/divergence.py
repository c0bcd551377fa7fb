"""The divergence guard: stop at the first non-finite value or an exploding loss."""

from __future__ import annotations

import math

# The explosion check's reference never drops below this fraction of the first loss.
FLOOR = 0.01


class DivergenceGuard:
    """Watches every step's loss and gradient norm.

    ``check`` returns a reason such as ``"diverged: loss=nan at epoch 3 step 41"`` when the
    loss or the gradient norm is not finite, or when, after the guard's first
    ``warmup_steps``, both the loss and the running (exponentially smoothed) loss are above
    ``factor`` times the lowest running loss seen so far; otherwise None. The guard's warmup is two steps, not the
    LR warmup: a run with lr=10 must stop within its first epoch, which is often all LR warmup.
    """

    def __init__(self, factor: float = 10.0, warmup_steps: int = 2, smoothing: float = 0.9) -> None:
        self.factor = factor
        self.warmup_steps = warmup_steps
        self.smoothing = smoothing
        self.smoothed: float | None = None
        self.best = math.inf
        self.first: float | None = None

    def check(self, loss: float, grad_norm: float | None, epoch: int, step: int) -> str | None:
        where = f"at epoch {epoch} step {step}"
        if not math.isfinite(loss):
            return f"diverged: loss={loss} {where}"
        if grad_norm is not None and not math.isfinite(grad_norm):
            return f"diverged: grad_norm={grad_norm} {where}"
        # Both the batch loss and the running loss must be high: one noisy batch of a converged
        # run is easily 10x its best but leaves the running loss low, and a spike in the guard's
        # warmup lifts the running loss for a while though later batches are fine. An exploding
        # run lifts both within a step or two. The reference never falls below 1% of the starting
        # loss, so near zero a few noisy batches in a row are not divergence either.
        smoothed = loss if self.smoothed is None else self.smoothing * self.smoothed + (1 - self.smoothing) * loss
        reference = max(self.best, FLOOR * (self.first if self.first is not None else 0.0))
        if self.factor > 0 and step > self.warmup_steps and min(loss, smoothed) > self.factor * reference:
            return (
                f"diverged: loss={loss:.4g} (running {smoothed:.4g}) above {self.factor:g}x "
                f"the best running loss {reference:.4g} {where}"
            )
        if self.first is None:
            self.first = loss
        self.smoothed = smoothed
        self.best = min(self.best, smoothed)
        return None

    def state_dict(self) -> dict[str, float | None]:
        return {"smoothed": self.smoothed, "best": self.best, "first": self.first}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.smoothed = state["smoothed"]
        self.best = float(state["best"])
        self.first = state.get("first")
