"""A model's forward call as data: what makes two calls cost the same, and how to replay one.

The FLOPs meter keys its counts by a call's ``signature`` and traces a call through a
``PositionalAdapter``, since a jit trace takes tensors positionally and returns tensors only,
while models take several or keyword arguments and may return dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn


@dataclass(frozen=True)
class Call:
    """A forward call's positional and keyword arguments."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def run(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)


def leaves(value: Any) -> list[Any]:
    if isinstance(value, Call):
        return leaves(value.args) + leaves(value.kwargs)
    if isinstance(value, dict):
        return [leaf for key in sorted(value, key=str) for leaf in leaves(value[key])]
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


def tensors_of(inputs: Any) -> list[torch.Tensor]:
    return [leaf for leaf in leaves(inputs) if isinstance(leaf, torch.Tensor)]


def signature(inputs: Any) -> Any:
    """What makes two calls cost the same: each tensor's shape and dtype, and the other values."""
    if isinstance(inputs, torch.Tensor):
        return (tuple(inputs.shape), inputs.dtype)
    keys = tuple(sorted(inputs.kwargs)) if isinstance(inputs, Call) else ()
    return (keys, *((tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else repr(x) for x in leaves(inputs)))


def _rebuild(template: Any, tensors: Iterator[torch.Tensor]) -> Any:
    if isinstance(template, torch.Tensor):
        return next(tensors)
    if isinstance(template, dict):
        return {key: _rebuild(template[key], tensors) for key in sorted(template, key=str)}
    if isinstance(template, (tuple, list)):
        return type(template)(_rebuild(item, tensors) for item in template)
    return template


class PositionalAdapter(nn.Module):
    """``model`` called as ``call`` was, with the tensors as positional arguments and as outputs."""

    def __init__(self, model: nn.Module, call: Call) -> None:
        super().__init__()
        self.model = model
        self.call = call
        self.tensors = tensors_of(call)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        flat = iter(tensors)
        args = _rebuild(self.call.args, flat)
        kwargs = _rebuild(self.call.kwargs, flat)
        outputs = self.model(*args, **kwargs)
        return tuple(t for t in leaves(outputs) if isinstance(t, torch.Tensor))
