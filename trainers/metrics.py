"""Validation metrics: accumulated over the whole validation set, computed once per epoch.

A metric is any object with ``update(outputs, targets)``, ``compute()`` and ``reset()``, as
torchmetrics' are, so ROC-AUC, F1 and R² are exact rather than averages of per-batch values. A
task gives each metric by name, as the object or as a function that makes one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from torch import Tensor


class Metric(Protocol):
    def update(self, outputs: Any, targets: Any) -> None: ...
    def compute(self) -> Any: ...
    def reset(self) -> None: ...



def make_metric(entry: Any, name: str) -> Metric:
    """A fresh metric from a task's entry: the metric itself, or a function that makes one."""
    makes_one = isinstance(entry, type) or (callable(entry) and not hasattr(entry, "update"))
    metric = entry() if makes_one else entry
    missing = [m for m in ("update", "compute", "reset") if not callable(getattr(metric, m, None))]
    if missing:
        raise TypeError(f"metric {name!r} is a {type(metric).__name__} without {', '.join(missing)}(); "
                        "give a torchmetrics metric, or any object with update/compute/reset")
    return metric


def known_direction(metric: Metric, declared: str | None) -> str | None:
    """``maximize`` or ``minimize`` as declared, else from torchmetrics' ``higher_is_better``; None if neither says."""
    if declared is not None:
        return declared
    higher = getattr(metric, "higher_is_better", None)
    return None if higher is None else "maximize" if higher else "minimize"


def metric_direction(metric: Metric, declared: str | None) -> str:
    """``known_direction``, else minimize (what a search refuses to assume: ``Task.undirected``)."""
    return known_direction(metric, declared) or "minimize"


def as_float(value: Any) -> float:
    """A computed metric as a Python float (one-element tensors included)."""
    if isinstance(value, Tensor):
        return float(value.detach().float().reshape(-1)[0]) if value.numel() == 1 else float("nan")
    return float(value)


class MetricSet:
    """The task's metrics for one trial: on the trial's device, reset before each validation."""

    def __init__(self, entries: Mapping[str, Any], device: torch.device) -> None:
        self.metrics: dict[str, Metric] = {}
        for name, entry in entries.items():
            metric = make_metric(entry, name)
            if isinstance(metric, torch.nn.Module):
                metric = metric.to(device)
            self.metrics[name] = metric

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def update(self, outputs: Any, targets: Any) -> None:
        for metric in self.metrics.values():
            metric.update(outputs, targets)

    def compute(self) -> dict[str, float]:
        return {name: as_float(metric.compute()) for name, metric in self.metrics.items()}


class MeanOf:
    """The mean over examples of ``per_example(outputs, targets)`` (a tensor, one value per example)."""

    higher_is_better = True

    def __init__(self, per_example: Callable[[Tensor, Tensor], Tensor], higher_is_better: bool = True) -> None:
        self.per_example = per_example
        self.higher_is_better = higher_is_better
        self.reset()

    def reset(self) -> None:
        self.total: Tensor | None = None
        self.count = 0

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        values = self.per_example(outputs, targets).detach()
        # Summed where the values are: reading each batch's sum back would sync a GPU at every
        # validation batch (the built-in accuracy, MSE and MAE are MeanOf). MPS has no float64.
        total = values.sum(dtype=torch.float32 if values.device.type == "mps" else torch.float64)
        self.total = total if self.total is None else self.total + total
        self.count += values.numel()

    def compute(self) -> float:
        return float(self.total) / self.count if self.count else float("nan")
