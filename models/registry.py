"""The model registry: each model's constructor and the schema of its hyperparameters."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Mapping, Sequence, TypeVar

from hpsearch.models.schema import HyperParam, resolve_values

if TYPE_CHECKING:
    from torch import nn


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the known name closest to a mistyped ``name``, else nothing."""
    known = list(known)
    # Case first: "ot" for "OT" or "FLOPs" for "flops" is no typo difflib would rank close.
    same = [k for k in known if k.lower() == name.lower()]
    close = same or difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


@dataclass(frozen=True)
class DataSpec:
    """What a task tells a model about its input and output.

    ``kind`` is ``"tokens"`` (``LongTensor[batch, seq_len]`` of ids below ``vocab_size``, one
    label per example), ``"token_sequence"`` (the same input, but ``output_len`` labels per
    example, e.g. the digits of a product) or ``"series"``
    (``FloatTensor[batch, seq_len, num_features]`` whose last feature is the forecast target).
    ``"image"`` (``FloatTensor[batch, channels, height, width]``, ``input_shape`` without the batch)
    and ``"tabular"`` (``FloatTensor[batch, num_features]``) are for users' tasks, as is ``"any"``:
    a model registered for any input is checked by running it on two examples of the task's data.
    ``num_outputs`` is the number of classes for classification (per output position for
    ``token_sequence``), or of predicted values for regression. Only what a task has is set.
    """

    kind: str = "any"
    seq_len: int | None = None
    num_outputs: int | None = None
    vocab_size: int | None = None
    num_features: int | None = None
    output_len: int | None = None
    input_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: ``build(data, **hyperparameters)`` makes the module."""

    name: str
    build: Callable[..., nn.Module]
    params: tuple[HyperParam, ...]
    description: str = ""
    input_kind: str = "any"

    def accepts(self, data: DataSpec) -> bool:
        """Whether the model takes the task's input (``any`` takes every kind; the probe checks it)."""
        return self.input_kind == "any" or data.kind == "any" or self.input_kind == data.kind

    def param(self, name: str) -> HyperParam | None:
        return next((p for p in self.params if p.name == name), None)

    def resolve(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults with every override applied on top; an unknown name is an error."""
        return resolve_values(self.params, overrides, f"model {self.name!r}", "hyperparameter")


T = TypeVar("T")


def code_origin(function: Any) -> str:
    """Which code makes an entry: the same for a re-run notebook cell, and for one file imported two ways.

    A function's source file and qualified name, so a script run as ``__main__`` and the same
    file imported by name agree; in a notebook (no source file) or inside hpsearch, the module
    and qualified name. An ``hpsearch_origin`` attribute overrides both.
    """
    explicit = getattr(function, "hpsearch_origin", None)
    if explicit:
        return str(explicit)
    function = getattr(function, "func", function)  # functools.partial
    module = getattr(function, "__module__", None) or "?"
    qualname = getattr(function, "__qualname__", type(function).__qualname__)
    code = getattr(function, "__code__", None) or getattr(getattr(function, "__init__", None), "__code__", None)
    filename = getattr(code, "co_filename", None)
    if module.startswith("hpsearch.") or not filename or filename.startswith("<") or "ipykernel" in filename:
        return f"{module}.{qualname}"
    return f"{Path(filename).resolve()}:{qualname}"


class Registry(Generic[T]):
    """Named entries of one kind (models, tasks, optimizers): add, look up, list by name.

    Adding a name again from the same code (same module and qualified name, as when a notebook
    cell runs twice) replaces the entry; from other code it is an error, so two plugins cannot
    silently shadow each other.
    """

    def __init__(self, kind: str, builtins: Sequence[str] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        # Modules whose import registers the built-in entries, imported when the registry is
        # first used rather than with this module: the model zoo imports torch, which commands
        # that never look a model up (``hpsearch --help``, ``hpsearch studies``) must not pay for.
        self._builtins = tuple(builtins)
        self._loading = False

    def _load_builtins(self) -> None:
        if not self._builtins or self._loading:
            return  # loaded, or loading: the built-in modules' own registrations land here
        self._loading = True
        try:
            for module in self._builtins:
                importlib.import_module(module)
            self._builtins = ()
        finally:
            self._loading = False

    def add(self, name: str, entry: T, origin: str | None = None) -> T:
        self._load_builtins()  # a name the built-ins take is taken even before they are listed
        origin = origin or code_origin(entry)
        if name in self._entries and self._origins[name] != origin:
            raise ValueError(f"a {self.kind} named {name!r} is already registered (by {self._origins[name]})")
        self._entries[name] = entry
        self._origins[name] = origin
        return entry

    def origin(self, name: str) -> str | None:
        """``module.qualname`` of the code that registered ``name``."""
        self._load_builtins()
        return self._origins.get(name)

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._entries)

    def remove(self, name: str) -> None:
        self._load_builtins()
        self._entries.pop(name, None)
        self._origins.pop(name, None)

    def get(self, name: str) -> T:
        self._load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            raise KeyError(f"unknown {self.kind} {name!r}{did_you_mean(name, known)}; known {self.kind}s: {', '.join(known)}") from None

    def all(self) -> list[T]:
        self._load_builtins()
        return [self._entries[n] for n in sorted(self._entries)]


@dataclass(frozen=True)
class LazyBuilder:
    """A built-in builder named by module and function, imported on the first build.

    The built-in models and tasks are declared with these, so that listing them, and checking a
    search against their schemas, does not import torch with their code.
    """

    module: str
    function: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.function)(*args, **kwargs)

    @property
    def hpsearch_origin(self) -> str:
        # The origin the function itself has (``code_origin``): errors and stored studies name it.
        return f"{self.module}.{self.function}"


# The zoo's declarations (``models/zoo.py``), imported when the registry is first used.
_MODELS: Registry[ModelSpec] = Registry("model", ["hpsearch.models.zoo"])


def register_model(
    name: str,
    build: Callable[..., nn.Module],
    params: tuple[HyperParam, ...] | list[HyperParam],
    description: str = "",
    input_kind: str = "any",
) -> ModelSpec:
    """Add a model: ``build(data, **hyperparameters)`` returns the ``nn.Module``.

    ``input_kind`` is a ``DataSpec`` kind the model needs, or ``any``. Registering the same name
    again from the same code replaces the model; a name taken by other code is an error.
    """
    return _MODELS.add(name, ModelSpec(name, build, tuple(params), description, input_kind), code_origin(build))


def get_model(name: str) -> ModelSpec:
    """The registered model called ``name`` (``KeyError`` naming the known ones if absent)."""
    return _MODELS.get(name)


def model_origin(name: str) -> str | None:
    """``module.qualname`` of the builder registered as ``name`` (None if there is none)."""
    return _MODELS.origin(name)


def list_models() -> list[ModelSpec]:
    """Every registered model, by name."""
    return _MODELS.all()


def build_model(name: str, hparams: Mapping[str, Any], data: DataSpec) -> nn.Module:
    """Build model ``name`` with ``hparams`` over its defaults for ``data``."""
    spec = get_model(name)
    if not spec.accepts(data):
        raise ValueError(f"model {name!r} takes {spec.input_kind} input, but the task gives {data.kind}")
    return spec.build(data, **spec.resolve(hparams))
