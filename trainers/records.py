"""What the trainer hands its callbacks at the end of every epoch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class EpochRecord:
    """Measurements of one finished epoch (``epoch`` counts from 1).

    ``metrics`` holds the task's validation metrics by name (for example ``{"val_acc": 0.91}``).
    """

    epoch: int
    lr: float
    train_loss: float
    val_loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    grad_norm_mean: float = float("nan")
    grad_norm_max: float = float("nan")
    nonfinite_steps: int = 0
    clipped_steps: int = 0
    epoch_seconds: float = 0.0
    samples_per_second: float = 0.0
    peak_memory_bytes: int = 0
    mfu: float = float("nan")  # model FLOPs utilisation of the epoch's training steps (with a FLOPs meter)

    def value(self, name: str) -> float:
        """The value of ``name``: a field such as ``val_loss`` or a task metric such as ``val_acc``."""
        if name in self.metrics:
            return self.metrics[name]
        if name in ("lr", "train_loss", "val_loss", "grad_norm_mean", "grad_norm_max", "epoch_seconds", "samples_per_second"):
            return float(getattr(self, name))
        raise KeyError(f"no metric {name!r}; this run records {', '.join(self.metric_names())}")

    def metric_names(self) -> list[str]:
        return ["val_loss", "train_loss", *self.metrics]

    def as_row(self) -> dict[str, Any]:
        """A flat dict: every field, with ``metrics`` spread into their own keys."""
        row = asdict(self)
        row.update(row.pop("metrics"))
        return row


def format_epoch_line(record: EpochRecord) -> str:
    """The one-line epoch summary, e.g. ``Epoch 01 | Train Loss: 0.7025 | ... | LR: 0.001000``."""
    parts = [f"Epoch {record.epoch:02d}", f"Train Loss: {record.train_loss:.4f}", f"Val Loss: {record.val_loss:.4f}"]
    parts += [f"{name.replace('_', ' ').title()}: {value:.4f}" for name, value in record.metrics.items()]
    parts.append(f"LR: {record.lr:.6f}")
    return " | ".join(parts)
