"""The model registry: each model's constructor and the schema of its hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from hpsearch.models.schema import HyperParam


@dataclass(frozen=True)
class DataSpec:
    """What a task tells a model about its input and output.

    ``kind`` is ``"tokens"`` (``LongTensor[batch, seq_len]`` of ids below ``vocab_size``, one
    label per example), ``"token_sequence"`` (the same input, but ``output_len`` labels per
    example, e.g. the digits of a product) or ``"series"``
    (``FloatTensor[batch, seq_len, num_features]`` whose last feature is the forecast target).
    ``num_outputs`` is the number of classes for classification (per output position for
    ``token_sequence``), or of predicted values for regression.
    """

    kind: str
    seq_len: int
    num_outputs: int
    vocab_size: int | None = None
    num_features: int | None = None
    output_len: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: ``build(data, **hyperparameters)`` makes the module."""

    name: str
    build: Callable[..., nn.Module]
    params: tuple[HyperParam, ...]
    description: str = ""
    input_kind: str = "tokens"

    def param(self, name: str) -> HyperParam | None:
        return next((p for p in self.params if p.name == name), None)

    def resolve(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults with every override applied on top; an unknown name is an error.

        This is the only place defaults and chosen values meet, so a swept value can never be
        replaced by a default.
        """
        unknown = sorted(set(overrides) - {p.name for p in self.params})
        if unknown:
            raise ValueError(f"model {self.name!r} has no hyperparameter {', '.join(unknown)}")
        return {p.name: p.validate(overrides[p.name]) if p.name in overrides else p.default for p in self.params}


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    build: Callable[..., nn.Module],
    params: tuple[HyperParam, ...] | list[HyperParam],
    description: str = "",
    input_kind: str = "tokens",
) -> ModelSpec:
    """Add a model to the registry; a name already taken is an error."""
    if name in _REGISTRY:
        raise ValueError(f"a model named {name!r} is already registered")
    spec = ModelSpec(name, build, tuple(params), description, input_kind)
    _REGISTRY[name] = spec
    return spec


def get_model(name: str) -> ModelSpec:
    """The registered model called ``name`` (``KeyError`` naming the known ones if absent)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}") from None


def list_models() -> list[ModelSpec]:
    """Every registered model, by name."""
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def build_model(name: str, hparams: Mapping[str, Any], data: DataSpec) -> nn.Module:
    """Build model ``name`` with ``hparams`` over its defaults for ``data``."""
    spec = get_model(name)
    if data.kind != spec.input_kind:
        raise ValueError(f"model {name!r} takes {spec.input_kind} input, but the task gives {data.kind}")
    return spec.build(data, **spec.resolve(hparams))
