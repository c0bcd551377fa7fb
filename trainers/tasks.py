"""Tasks: data, loss and metrics, chosen by name with ``--task``; the two synthetic token tasks.

The registry and every built-in task's options live in ``trainers.task_registry``, which
imports no torch; its names are importable from here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from hpsearch.models import DataSpec, HyperParam
from hpsearch.trainers.data import Split, check_split
from hpsearch.trainers.metrics import MeanOf, known_direction, make_metric, metric_direction
from hpsearch.trainers.step import Step, StepFn, supervised_step
from hpsearch.trainers.task_registry import (  # noqa: F401  the registry's names, importable from here as before
    TaskSpec,
    build_task,
    get_task,
    list_tasks,
    register_task,
    task_origin,
)


@dataclass(frozen=True)
class Task:
    """A task: training and validation data, how a batch is scored, and the validation metrics.

    ``train`` and ``val`` are each a tuple of tensors ``(inputs, targets)`` (the fast path), a
    ``torch.utils.data.Dataset`` (map-style or iterable), or a function ``batch_size ->
    DataLoader`` (see ``trainers.data``). A batch is a tensor, a tuple or list, or a dict of tensors.

    The default step computes ``loss(model(inputs), targets)`` on ``(inputs, targets)`` batches
    (or dicts with a ``target`` key); ``step`` replaces it (see ``trainers.step``), and a task
    with a step needs no ``loss``. ``metrics`` maps each validation metric's name to a metric
    (``update(outputs, targets)``/``compute()``/``reset()``, as torchmetrics') or a function that
    makes one; ``metric_directions`` says ``maximize`` or ``minimize`` where torchmetrics'
    ``higher_is_better`` does not. ``data`` tells models about the input (``DataSpec``);
    ``test`` is a held-out split that training and model selection never see.
    ``target_scale`` is the ``(mean, std)`` the targets were standardized with, where the task
    standardized them (``csv_timeseries``): ``outputs * std + mean`` is in the data's own units.
    """

    name: str
    train: Split
    val: Split
    loss: Callable[..., Tensor] | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    metric_directions: Mapping[str, str] = field(default_factory=dict)
    data: DataSpec = field(default_factory=DataSpec)
    step: Step | None = None
    test: Split | None = None
    target_scale: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.step is not None and not isinstance(self.step, Step):
            object.__setattr__(self, "step", Step(self.step))
        if self.step is None and self.loss is None:
            raise ValueError(f"task {self.name!r} needs a loss, or a step that computes one")

    def check(self) -> None:
        """``DataError`` unless both splits are of a kind the trainer takes."""
        check_split(self.train, f"task {self.name}'s train split")
        check_split(self.val, f"task {self.name}'s val split")

    def step_fn(self) -> StepFn:
        return self.step.fn if self.step is not None else supervised_step(self.loss)  # type: ignore[arg-type]

    @property
    def step_params(self) -> tuple[HyperParam, ...]:
        return self.step.params if self.step is not None else ()

    def directions(self) -> dict[str, str]:
        """Every metric's direction (``maximize``/``minimize``), declared or taken from the metric."""
        return {name: metric_direction(make_metric(entry, name), self.metric_directions.get(name))
                for name, entry in self.metrics.items()}

    def undirected(self) -> list[str]:
        """The metrics whose direction neither ``metric_directions`` nor ``higher_is_better`` gives."""
        return [name for name, entry in self.metrics.items()
                if known_direction(make_metric(entry, name), self.metric_directions.get(name)) is None]


def classification_loss(outputs: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy in fp32 (autocast's bf16 logits lose the small differences that matter)."""
    return F.cross_entropy(outputs.float(), targets, label_smoothing=label_smoothing)


def accuracy() -> Callable[[], MeanOf]:
    """``val_acc``: the fraction of examples whose highest score is the label.

    torchmetrics' ``MulticlassAccuracy(average="micro")`` gives the same value, but importing
    torchmetrics (and the scipy it loads) cost every trial's process 0.6 s before its first step.
    """
    return lambda: MeanOf(lambda outputs, targets: (outputs.argmax(dim=-1) == targets).float())


def _split(x: Tensor, y: Tensor, val_fraction: float) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    n_val = max(1, int(len(x) * val_fraction))
    return (x[n_val:], y[n_val:]), (x[:n_val], y[:n_val])


def _classification_task(name: str, x: Tensor, y: Tensor, vocab_size: int, num_classes: int) -> Task:
    train, val = _split(x, y, 0.2)
    return Task(
        name=name,
        data=DataSpec(kind="tokens", seq_len=x.shape[1], num_outputs=num_classes, vocab_size=vocab_size),
        train=train,
        val=val,
        loss=classification_loss,
        metrics={"val_acc": accuracy()},
    )


def synthetic_tokens(dataset_size: int, seq_len: int, vocab_size: int, num_classes: int, data_seed: int) -> Task:
    """Label = the token bucket (``token % num_classes``) most frequent in the first half.

    The generator enriches one bucket in the first half and a different one in the second
    half, equally strongly. A model that ignores where tokens stand sees two enriched buckets
    and tops out near 50% accuracy; one that uses position can reach 100%.
    """
    if vocab_size < num_classes:
        raise ValueError(f"vocab_size ({vocab_size}) must be at least num_classes ({num_classes})")
    g = torch.Generator().manual_seed(data_seed)
    half = seq_len // 2
    tokens = torch.randint(0, vocab_size, (dataset_size, seq_len), generator=g)
    first_bucket = torch.randint(0, num_classes, (dataset_size,), generator=g)
    second_bucket = (first_bucket + torch.randint(1, num_classes, (dataset_size,), generator=g)) % num_classes
    per_bucket = vocab_size // num_classes
    planted = torch.randint(0, per_bucket, (dataset_size, seq_len), generator=g) * num_classes
    bucket = torch.cat([first_bucket[:, None].expand(-1, half), second_bucket[:, None].expand(-1, seq_len - half)], 1)
    plant = torch.rand(dataset_size, seq_len, generator=g) < 0.5
    tokens = torch.where(plant, planted + bucket, tokens)
    counts = F.one_hot(tokens[:, :half] % num_classes, num_classes).sum(dim=1)
    labels = counts.argmax(dim=1)
    return _classification_task("synthetic_tokens", tokens, labels, vocab_size, num_classes)


def synthetic_parity(dataset_size: int, seq_len: int, vocab_size: int, num_classes: int, data_seed: int) -> Task:
    """The replaced system's task: uniform tokens, label = ``sum(tokens) % num_classes``."""
    g = torch.Generator().manual_seed(data_seed)
    tokens = torch.randint(0, vocab_size, (dataset_size, seq_len), generator=g)
    labels = tokens.sum(dim=1) % num_classes
    return _classification_task("synthetic_parity", tokens, labels, vocab_size, num_classes)
