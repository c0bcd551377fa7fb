"""The model registry: each model's constructor and the schema of its hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Mapping, TypeVar

from torch import nn

from hpsearch.models.schema import HyperParam, resolve_values


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
        """Defaults with every override applied on top; an unknown name is an error."""
        return resolve_values(self.params, overrides, f"model {self.name!r}", "hyperparameter")


T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (models, tasks): add once, look up, list by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(sorted(self._entries))}") from None

    def all(self) -> list[T]:
        return [self._entries[n] for n in sorted(self._entries)]


_MODELS: Registry[ModelSpec] = Registry("model")


def register_model(
    name: str,
    build: Callable[..., nn.Module],
    params: tuple[HyperParam, ...] | list[HyperParam],
    description: str = "",
    input_kind: str = "tokens",
) -> ModelSpec:
    """Add a model to the registry; a name already taken is an error."""
    return _MODELS.add(name, ModelSpec(name, build, tuple(params), description, input_kind))


def get_model(name: str) -> ModelSpec:
    """The registered model called ``name`` (``KeyError`` naming the known ones if absent)."""
    return _MODELS.get(name)


def list_models() -> list[ModelSpec]:
    """Every registered model, by name."""
    return _MODELS.all()


def build_model(name: str, hparams: Mapping[str, Any], data: DataSpec) -> nn.Module:
    """Build model ``name`` with ``hparams`` over its defaults for ``data``."""
    spec = get_model(name)
    if data.kind != spec.input_kind:
        raise ValueError(f"model {name!r} takes {spec.input_kind} input, but the task gives {data.kind}")
    return spec.build(data, **spec.resolve(hparams))
