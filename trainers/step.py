"""The training step: what one batch does to the model, and the default supervised one.

A step is ``fn(model, batch, hparams)``. It gets the model, a batch already on the device and
every hyperparameter of the trial by name (the model's, the step's own and the trainer's), and
returns the loss: a scalar tensor, or a ``StepOutput`` that also carries the outputs and
targets the metrics see and extra values to log. The trainer calls the same step for training
(autograd on, ``model.train()``) and validation (``torch.no_grad()``, ``model.eval()``), inside
autocast, and does everything else around it: backward, accumulation, clipping, the optimizer,
the divergence guard, the FLOPs meter (a hook on the model sees every forward pass the step
makes), checkpoints and the per-epoch row.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from hpsearch.models.schema import HyperParam
from hpsearch.trainers.data import DataError

#: Keys a dict batch may keep its targets under, in the order they are looked for.
TARGET_KEYS = ("target", "targets", "label", "labels", "y")

BATCH_CONTRACT = (
    "the default step takes (inputs, targets) tuples or dicts with a 'target' key; "
    "give the task a step for any other batch"
)


@dataclass
class StepOutput:
    """What a step returns: the loss, and optionally what the metrics see and values to log.

    ``logs`` values (scalars or one-element tensors) are averaged over the epoch and recorded as
    ``train_<name>`` and ``val_<name>`` in the per-epoch table.
    """

    loss: Tensor
    outputs: Any = None
    targets: Any = None
    logs: Mapping[str, Any] = field(default_factory=dict)


StepFn = Callable[[nn.Module, Any, Mapping[str, Any]], "Tensor | StepOutput"]


@dataclass(frozen=True)
class Step:
    """A training step with its own hyperparameters (``aux_weight``, ``mixup_alpha``, ...).

    ``params`` are declared like a model's: sweepable by name, type-checked, defaults filled in.
    """

    fn: StepFn
    params: tuple[HyperParam, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(self.params))

    def param(self, name: str) -> HyperParam | None:
        return next((p for p in self.params if p.name == name), None)


def as_step_output(result: Any) -> StepOutput:
    """A step's return value as a ``StepOutput`` (``DataError`` if it is neither form)."""
    if isinstance(result, StepOutput):
        return result
    if isinstance(result, Tensor):
        return StepOutput(loss=result)
    raise DataError(f"a step returned a {type(result).__name__}; return the loss tensor or a StepOutput")


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` of a batch the default step understands."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        key = next((k for k in TARGET_KEYS if k in batch), None)
        if key is not None:
            return {k: v for k, v in batch.items() if k != key}, batch[key]
        raise DataError(f"a dict batch with keys {sorted(batch)} has no target; {BATCH_CONTRACT}")
    shape = f"a {len(batch)}-item {type(batch).__name__}" if isinstance(batch, (tuple, list)) else f"a {type(batch).__name__}"
    raise DataError(f"a batch is {shape}; {BATCH_CONTRACT}")


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(inputs)``; a tuple or list of inputs is spread, a dict passed as keywords."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def takes_label_smoothing(loss: Callable[..., Any]) -> bool:
    """Whether ``loss`` accepts a ``label_smoothing`` keyword (as ``F.cross_entropy`` does)."""
    try:
        parameters = inspect.signature(loss).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "label_smoothing" or p.kind == p.VAR_KEYWORD for p in parameters)


def supervised_step(loss: Callable[..., Tensor]) -> StepFn:
    """The default step: ``loss(model(inputs), targets)``, with ``label_smoothing=`` when it is set."""

    def step(model: nn.Module, batch: Any, hparams: Mapping[str, Any]) -> StepOutput:
        inputs, targets = split_batch(batch)
        outputs = call_model(model, inputs)
        smoothing = hparams.get("label_smoothing", 0.0)
        value = loss(outputs, targets, label_smoothing=smoothing) if smoothing else loss(outputs, targets)
        return StepOutput(loss=value, outputs=outputs, targets=targets)

    return step
