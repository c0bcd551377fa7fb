"""A trial's FLOPs statistics: the user attributes and the ``FLOPS STATISTICS`` block."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FlopsStats:
    """A trial's FLOPs, over every observed forward pass (training and validation)."""

    total: int  # forward FLOPs, all passes
    avg_per_pass: float
    forward_passes: int
    training_passes: int
    avg_time_per_pass_s: float
    per_second: float  # total / measured forward seconds
    std: float  # population std of per-pass FLOPs
    min: int
    max: int
    per_sample_forward: float  # total / samples seen
    elementwise_total: int  # the part of ``total`` that is field elementwise work
    params_count: int
    train_step_total: int  # forward + backward FLOPs over all training steps
    train_per_second: float  # achieved over training steps (see FlopsMeter.observe)
    mfu: float = float("nan")  # train_per_second / the device's peak FLOP/s in the trial's precision
    precision: str = ""  # the trial's precision, whose peak ``mfu`` divides by

    def as_user_attrs(self) -> dict[str, float | int]:
        """The trial user attributes named in DESIGN.md, plus the two training-step ones."""
        return {
            "flops.total": int(self.total),
            "flops.avg_per_pass": float(self.avg_per_pass),
            "flops.forward_passes": int(self.forward_passes),
            "flops.avg_time_per_pass_s": float(self.avg_time_per_pass_s),
            "flops.per_second": float(self.per_second),
            "flops.std": float(self.std),
            "flops.min": int(self.min),
            "flops.max": int(self.max),
            "flops.per_sample_forward": float(self.per_sample_forward),
            "params.count": int(self.params_count),
            "flops.train_step_total": int(self.train_step_total),
            "flops.train_per_second": float(self.train_per_second),
            # Only where the meter knows the device's peak (the trainer tells it) and steps were timed.
            **({"flops.mfu": float(self.mfu)} if math.isfinite(self.mfu) else {}),
        }

    def _mfu_text(self) -> str:
        if not math.isfinite(self.mfu):
            return "-"
        return f"{100 * self.mfu:.2f}% of the {self.precision} peak" if self.precision else f"{100 * self.mfu:.2f}%"

    def format_block(self) -> str:
        """The multi-line ``FLOPS STATISTICS`` block printed at the end of a trial."""
        validation = self.forward_passes - self.training_passes
        rows = [
            ("Forward passes", f"{self.forward_passes:,} ({self.training_passes:,} training, {validation:,} validation)"),
            ("Total forward FLOPs", _si(self.total, "FLOPs")),
            # Only the Token Field Networks do field elementwise work; for other models the row says nothing.
            *([("  of which field elementwise", _si(self.elementwise_total, "FLOPs"))] if self.elementwise_total else []),
            ("Average FLOPs per pass", _si(self.avg_per_pass, "FLOPs")),
            ("Std / min / max per pass", " / ".join(_si(v, "FLOPs") for v in (self.std, self.min, self.max))),
            ("Forward FLOPs per sample", _si(self.per_sample_forward, "FLOPs")),
            ("Average time per pass", f"{self.avg_time_per_pass_s * 1e3:.3f} ms"),
            ("Forward FLOP/s", _si(self.per_second, "FLOP/s")),
            ("Training FLOPs (fwd + bwd)", _si(self.train_step_total, "FLOPs")),
            ("Training FLOP/s (achieved)", _si(self.train_per_second, "FLOP/s")),
            ("MFU (of peak FLOP/s)", self._mfu_text()),
            ("Parameters", f"{self.params_count:,}"),
        ]
        width = max(len(name) for name, _ in rows) + 2
        rule = "=" * 24 + " FLOPS STATISTICS " + "=" * 24
        return "\n".join([rule, *(f"{name + ':':<{width}}{value}" for name, value in rows), "=" * len(rule)])


def _si(value: float, unit: str) -> str:
    """``1.234 GFLOPs``-style: three decimals and an SI prefix."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3f} {prefix}{unit}"
    return f"{value:g} {unit}"
