"""Optimizers by name: any ``torch.optim`` optimizer, and ones a plugin registers.

Weight decay applies to weight matrices and convolution kernels only: biases and the weights of
normalisation layers (every parameter with fewer than two dimensions) get none, as in nanoGPT
and most recipes, since decaying a scale or an offset towards zero only hurts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from hpsearch.models.registry import Registry

#: ``build(param_groups, lr=, weight_decay=, momentum=, betas=, eps=)`` -> an optimizer.
OptimizerBuilder = Callable[..., torch.optim.Optimizer]

_OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimizer")


def register_optimizer(name: str, build: OptimizerBuilder) -> OptimizerBuilder:
    """Add an optimizer: ``build(param_groups, *, lr, weight_decay, momentum, betas, eps)``.

    Take ``**_`` for the settings it has no use for. Registering a name again from the same
    code (a re-run notebook cell) replaces it.
    """
    return _OPTIMIZERS.add(name, build)


def optimizer_names() -> list[str]:
    return _OPTIMIZERS.names()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: matrices with ``weight_decay``, biases and norm weights without."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


def build_optimizer(
    name: str, model: nn.Module, *, lr: float, weight_decay: float, momentum: float, beta2: float, eps: float
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``model``'s parameters (``KeyError`` naming the known ones)."""
    build = _OPTIMIZERS.get(name)
    groups = param_groups(model, weight_decay)
    return build(groups, lr=lr, weight_decay=weight_decay, momentum=momentum, betas=(momentum, beta2), eps=eps)


def _torch_optimizer(cls: type[torch.optim.Optimizer], takes: Iterable[str]) -> OptimizerBuilder:
    """A builder for a ``torch.optim`` class that passes on the settings it takes."""
    wanted = set(takes)

    def build(groups: list[dict[str, Any]], **settings: Any) -> torch.optim.Optimizer:
        return cls(groups, **{k: v for k, v in settings.items() if k in wanted})

    return build


# momentum is Adam's beta1 and SGD's / RMSprop's momentum: one knob, one name to sweep.
for _name, _cls, _takes in (
    ("adamw", torch.optim.AdamW, ("lr", "betas", "eps")),
    ("adam", torch.optim.Adam, ("lr", "betas", "eps")),
    ("nadam", torch.optim.NAdam, ("lr", "betas", "eps")),
    ("radam", torch.optim.RAdam, ("lr", "betas", "eps")),
    ("adamax", torch.optim.Adamax, ("lr", "betas", "eps")),
    ("sgd", torch.optim.SGD, ("lr", "momentum")),
    ("rmsprop", torch.optim.RMSprop, ("lr", "momentum", "eps")),
    ("adagrad", torch.optim.Adagrad, ("lr", "eps")),
):
    register_optimizer(_name, _torch_optimizer(_cls, _takes))
