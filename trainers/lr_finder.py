"""The LR range test: raise the LR exponentially for a few steps and watch the loss."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from hpsearch.trainers.trainer import Trainer


# The loss past this many times its best smoothed value ends the test, as in fastai's and Lightning's.
DIVERGE_FACTOR = 4.0


@dataclass(frozen=True)
class LRFinderResult:
    """The LRs tried, the smoothed loss at each, and the suggestion.

    ``suggested`` is the LR where the smoothed loss falls fastest (steepest negative slope
    against log LR) before its lowest point, as fastai suggests; None where the loss did not
    fall before its lowest point (the range starts where the loss already rises, or the test
    is too short), as Lightning's ``lr_find`` gives no suggestion then. ``diverged_at`` is the
    LR of the step where the test stopped early because the loss (raw or smoothed) exceeded
    ``diverge_factor`` times the best smoothed loss (not among ``lrs``); None if every step ran.
    """

    lrs: list[float]
    losses: list[float]
    suggested: float | None
    diverged_at: float | None

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    def no_suggestion(self) -> str:
        """Why ``suggested`` is None, in one clause."""
        if not self.lrs:
            return "the LR range test found no LR at which the loss falls: it blew up at the first step"
        lowest = min(range(len(self.lrs)), key=self.losses.__getitem__)
        return (
            f"the LR range test found no LR at which the loss falls: it was lowest at step {lowest + 1} "
            f"of {len(self.lrs)}, lr={self.lrs[lowest]:.3g}"
        )


def find_lr(
    trainer: Trainer,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    smoothing: float = 0.98,
    diverge_factor: float = DIVERGE_FACTOR,
) -> LRFinderResult:
    """Run the range test with ``trainer``'s step, device, precision and optimizer; all are restored after.

    Each iteration is one training step on the next training batch, the LR raised exponentially
    from ``start_lr`` to ``end_lr``.
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"the LR range needs 0 < start_lr < end_lr (got {start_lr:g}..{end_lr:g})")
    if num_iter < 5:
        raise ValueError(f"num_iter must be at least 5 (got {num_iter})")
    model, optimizer, config = trainer.model, trainer.optimizer, trainer.config
    saved = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    shuffle_state, rng_state = trainer.shuffle.get_state(), torch.get_rng_state()
    meter, trainer.flops_meter = trainer.flops_meter, None
    if meter is not None:
        meter.detach()  # the test's steps are not the trial's
    source = trainer.batches("train")
    batches: Iterator[Any] = iter(())
    ratio = (end_lr / start_lr) ** (1 / (num_iter - 1))
    lrs: list[float] = []
    losses: list[float] = []
    average, best, diverged_at = 0.0, math.inf, None
    model.train()
    try:
        for i in range(num_iter):
            lr = start_lr * ratio**i
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = next(batches, None)
            if batch is None:
                batches = iter(source)
                batch = next(batches)
            loss = trainer.run_step(batch, training=True).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()

            value = loss.item()
            average = smoothing * average + (1 - smoothing) * value
            smoothed = average / (1 - smoothing ** (i + 1))  # bias correction for the zero start
            # The raw loss too: over a short test the smoothed one lags a blow-up by many steps,
            # and its slow fall back to a plateau afterwards looked like the steepest descent.
            if not math.isfinite(smoothed) or max(smoothed, value) > diverge_factor * best:
                diverged_at = lr
                break
            best = min(best, smoothed)
            lrs.append(lr)
            losses.append(smoothed)
    finally:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        optimizer.zero_grad(set_to_none=True)
        trainer.shuffle.set_state(shuffle_state)
        torch.set_rng_state(rng_state)
        trainer.flops_meter = meter
        if meter is not None:
            meter.attach(model)
    return LRFinderResult(lrs, losses, steepest_descent(lrs, losses), diverged_at)


def steepest_descent(lrs: list[float], losses: list[float]) -> float | None:
    """The LR at which the loss falls fastest against log LR; None if it does not fall before its lowest point.

    Only LRs up to the lowest loss count: past it the loss has turned up, and a fall there is
    a recovery from a blow-up, not learning. Slopes span a window of 5% of the points on each
    side: one lucky batch near the end would otherwise win with a two-point slope.
    """
    if losses:
        lowest = min(range(len(losses)), key=losses.__getitem__)
        lrs, losses = lrs[: lowest + 1], losses[: lowest + 1]
    width = max(1, len(lrs) // 20)
    if len(lrs) < 2 * width + 1:
        return None
    centres = range(width, len(lrs) - width)
    slope = {
        i: (losses[i + width] - losses[i - width]) / (math.log(lrs[i + width]) - math.log(lrs[i - width])) for i in centres
    }
    steepest = min(slope, key=slope.__getitem__)
    return lrs[steepest] if slope[steepest] < 0 else None
