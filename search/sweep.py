"""The sweep grammar: ``name:v1,v2,...`` lists and ``name:low..high[:log]`` ranges."""

from __future__ import annotations

import itertools
import math
import random
import re
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from hpsearch.models import HyperParam, ModelSpec
from hpsearch.search.errors import UsageError, did_you_mean
from hpsearch.trainers.config import TRAINER_PARAMS

if TYPE_CHECKING:
    import optuna

GRAMMAR = "name:v1,v2,...  or  name:low..high  or  name:low..high:log"


class SweepError(UsageError):
    """A sweep item that cannot be searched; the message names the item."""


@dataclass(frozen=True)
class SweepParam:
    """One swept hyperparameter: either ``values`` or a ``low``..``high`` range.

    ``models`` names the models it applies to; an empty tuple means it is a trainer setting or a
    hyperparameter of the task's step, which applies to every model.
    """

    name: str
    kind: str
    models: tuple[str, ...]
    values: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        return self.values is None

    @property
    def is_trainer_setting(self) -> bool:
        return not self.models

    def applies_to(self, model: str) -> bool:
        return self.is_trainer_setting or model in self.models

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution ``suggest`` asks with."""
        import optuna

        if self.values is not None:
            return optuna.distributions.CategoricalDistribution(list(self.values))
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log)

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask ``trial`` for this parameter's value, with its ``distribution``."""
        import optuna

        d = self.distribution()
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            return trial.suggest_categorical(self.name, list(d.choices))
        if isinstance(d, optuna.distributions.IntDistribution):
            return trial.suggest_int(self.name, d.low, d.high, log=d.log)
        return trial.suggest_float(self.name, d.low, d.high, log=d.log)


@dataclass(frozen=True)
class Sweep:
    """The parsed sweep over one or more models."""

    models: tuple[str, ...]
    params: tuple[SweepParam, ...]

    @property
    def is_grid(self) -> bool:
        """True when every parameter is a value list, so the sweep is a finite grid."""
        return all(not p.is_range for p in self.params)

    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of the grid, ``model`` first; each model gets only the parameters it has."""
        points = []
        for model in self.models:
            own = [p for p in self.params if p.applies_to(model)]
            for combo in itertools.product(*(p.values or () for p in own)):
                points.append({"model": model, **{p.name: v for p, v in zip(own, combo)}})
        return points

    @cached_property
    def _blocks(self) -> tuple[tuple[str, tuple[SweepParam, ...], int], ...]:
        """Each model's block of the grid: its name, its parameters and how many points it has."""
        blocks = []
        for model in self.models:
            own = tuple(p for p in self.params if p.applies_to(model))
            blocks.append((model, own, math.prod(len(p.values or ()) for p in own)))
        return tuple(blocks)

    @property
    def grid_size(self) -> int:
        """How many points the grid has, without making them."""
        return sum(size for _, _, size in self._blocks)

    def grid_point(self, index: int) -> dict[str, Any]:
        """The point at ``index`` of ``grid_points()``, decoded from the index alone (mixed radix, last item fastest)."""
        for model, own, size in self._blocks:
            if index < size:
                values = {}
                for param in reversed(own):
                    index, position = divmod(index, len(param.values or ()))
                    values[param.name] = (param.values or ())[position]
                return {"model": model, **{p.name: values[p.name] for p in own}}
            index -= size
        raise IndexError("grid index out of range")

    def grid_index(self, point: dict[str, Any]) -> int | None:
        """Where ``point`` is in ``grid_points()``; None for a point that is not on this grid."""
        offset = 0
        for model, own, size in self._blocks:
            if point.get("model") != model:
                offset += size
                continue
            if set(point) != {"model", *(p.name for p in own)}:
                return None
            index = 0
            for param in own:
                values = param.values or ()
                if point[param.name] not in values:
                    return None
                index = index * len(values) + values.index(point[param.name])
            return offset + index
        return None

    def first_point(self, model: str) -> dict[str, Any]:
        """The first grid point of ``model``."""
        offset = 0
        for name, _, size in self._blocks:
            if name == model:
                return self.grid_point(offset)
            offset += size
        raise KeyError(model)

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """The Optuna distribution of ``model`` and of each swept name, as ``suggest`` asks for them."""
        import optuna

        return {"model": optuna.distributions.CategoricalDistribution(list(self.models)),
                **{p.name: p.distribution() for p in self.params}}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample a point: ``model``, then each swept name that applies to it (``TrialPlan`` splits it)."""
        model = trial.suggest_categorical("model", list(self.models))
        return {"model": model, **{p.name: p.suggest(trial) for p in self.params if p.applies_to(model)}}


# Up to this many points, the order is Python's seeded shuffle of the indices (8 bytes each, about a
# second for 4M): the order hpsearch has always used, so existing studies and figures keep theirs.
SHUFFLED_UP_TO = 1 << 22


class SeededOrder:
    """A seeded random order of a grid's indices ``0..size-1``, read one position at a time.

    A pruner judges each trial against the earlier ones, so a grid runs in a random order rather
    than from one corner. Up to ``SHUFFLED_UP_TO`` points this is ``random.Random(seed).shuffle``
    of the indices, which is exactly the order of shuffling the points themselves; past it, a
    keyed Feistel permutation with cycle walking, which needs no memory per point: shuffling
    10^8 indices would take minutes and most of a gigabyte before the first trial.
    """

    ROUNDS = 4

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self._shuffled: array | None = None
        if size <= SHUFFLED_UP_TO:
            self._shuffled = array("q", range(size))
            random.Random(seed).shuffle(self._shuffled)
            return
        bits = (size - 1).bit_length()
        self._half = (bits + 1) // 2
        self._mask = (1 << self._half) - 1
        keys = random.Random(seed)
        self._keys = [keys.getrandbits(64) for _ in range(self.ROUNDS)]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, position: int) -> int:
        if not 0 <= position < self.size:
            raise IndexError("position out of range")
        if self._shuffled is not None:
            return self._shuffled[position]
        index = position
        while True:  # a bijection of 0..2^(2*half)-1, walked until it lands inside 0..size-1
            left, right = index >> self._half, index & self._mask
            for key in self._keys:
                mixed = ((right ^ key) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
                left, right = right, left ^ ((mixed >> 29) & self._mask)
            index = (left << self._half) | right
            if index < self.size:
                return index


def split_sweep_args(args: Iterable[str]) -> list[str]:
    """Each sweep item, whether given as separate arguments or as one quoted string."""
    return [item for arg in args for item in arg.split()]


# A comma before ``name:`` starts another item, written with a comma where a space belongs.
_JOINED_ITEMS = re.compile(r",\s*(?=[A-Za-z_]\w*:)")


def parse_sweep(items: Sequence[str], models: Sequence[ModelSpec], step_params: Sequence[HyperParam] = ()) -> Sweep:
    """Parse sweep items for ``models`` (and the task's ``step_params``); a problem raises ``SweepError`` naming the item."""
    params: list[SweepParam] = []
    seen: set[str] = set()
    for item in split_sweep_args(items):
        name, sep, body = item.partition(":")
        if not sep or not name:
            raise SweepError(f"malformed sweep item {item!r}; write {GRAMMAR}")
        joined = _JOINED_ITEMS.split(item)
        if len(joined) > 1:
            raise SweepError(f"sweep item {item!r} holds {len(joined)} items: separate them with spaces, not commas "
                             f"({' '.join(joined)})")
        if name == "model":
            raise SweepError("choose models with --models, not in the sweep")
        if name in seen:
            raise SweepError(f"{name} is swept twice; give all its values in one item, e.g. {name}:a,b")
        seen.add(name)
        schema, targets = _schema_for(name, models, step_params)
        params.append(_parse_body(item, name, body, schema, targets))
    return Sweep(tuple(m.name for m in models), tuple(params))


def _schema_for(
    name: str, models: Sequence[ModelSpec], step_params: Sequence[HyperParam]
) -> tuple[HyperParam, tuple[str, ...]]:
    shared = next((p for p in (*TRAINER_PARAMS, *step_params) if p.name == name), None)
    if shared is not None:
        return shared, ()
    found = [(m.name, m.param(name)) for m in models if m.param(name) is not None]
    if not found:
        known = sorted({p.name for m in models for p in m.params} | {p.name for p in (*TRAINER_PARAMS, *step_params)})
        raise SweepError(
            f"unknown hyperparameter {name!r}{did_you_mean(name, known)} for {', '.join(m.name for m in models)}; "
            f"sweepable: {', '.join(known)}"
        )
    kinds = {(p.kind, p.choices) for _, p in found}
    if len(kinds) > 1:
        raise SweepError(f"{name} has different types in {', '.join(n for n, _ in found)}; sweep one model at a time")
    return found[0][1], tuple(n for n, _ in found)


def _parse_body(item: str, name: str, body: str, schema: HyperParam, targets: tuple[str, ...]) -> SweepParam:
    if ".." in body:
        return _parse_range(item, name, body, schema, targets)
    texts = body.split(",")
    if not body or any(not t.strip() for t in texts):
        raise SweepError(f"sweep item {item!r} has an empty value; write {name}:v1,v2,...")
    try:
        values = tuple(dict.fromkeys(schema.parse(t) for t in texts))
    except ValueError as error:
        raise SweepError(f"in sweep item {item!r}: {error}") from None
    return SweepParam(name, schema.kind, targets, values=values)


def _parse_range(item: str, name: str, body: str, schema: HyperParam, targets: tuple[str, ...]) -> SweepParam:
    bounds, _, scale = body.partition(":")
    if "..." in bounds or bounds.count("..") > 1:
        raise SweepError(f"sweep item {item!r}: write a range with two dots, {name}:low..high")
    low_text, _, high_text = bounds.partition("..")
    if scale not in ("", "log"):
        raise SweepError(f"sweep item {item!r}: the only range option is ':log'")
    if schema.kind not in ("int", "float"):
        choices = [str(c) for c in schema.choices or ()]
        # (what it takes, two values to list, those values as a study file writes them), by kind
        takes, listed, written = {
            "choice": (f"one of {', '.join(choices)}", choices[:2], [repr(c) for c in choices[:2]]),
            "bool": ("true or false", ["true", "false"], ["true", "false"]),
        }.get(schema.kind, ("names", [low_text, high_text], [repr(low_text), repr(high_text)]))
        raise SweepError(f"sweep item {item!r}: a range needs numbers, and {name} takes {takes}; list the values instead: "
                         f"{name}:{','.join(listed)} (in a study file or a Python dict, a list: {name} = [{', '.join(written)}])")
    if not low_text or not high_text:
        raise SweepError(f"sweep item {item!r} needs both ends of the range; write {name}:low..high")
    try:
        low, high = schema.parse(low_text), schema.parse(high_text)
    except ValueError as error:
        raise SweepError(f"in sweep item {item!r}: {error}") from None
    if not low < high:
        raise SweepError(f"sweep item {item!r}: the range's low end must be below its high end")
    if scale == "log" and low <= 0:
        raise SweepError(f"sweep item {item!r}: a log range must start above 0")
    return SweepParam(name, schema.kind, targets, low=low, high=high, log=scale == "log")
