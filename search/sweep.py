"""The sweep grammar: ``name:v1,v2,...`` lists and ``name:low..high[:log]`` ranges."""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from hpsearch.models import HyperParam, ModelSpec
from hpsearch.search.errors import UsageError
from hpsearch.trainers.config import TRAINER_PARAMS

if TYPE_CHECKING:
    import optuna

GRAMMAR = "name:v1,v2,...  or  name:low..high  or  name:low..high:log"


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

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask ``trial`` for this parameter's value, with the matching Optuna distribution."""
        if self.values is not None:
            return trial.suggest_categorical(self.name, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


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

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample a point: ``model``, then each swept name that applies to it (``TrialPlan`` splits it)."""
        model = trial.suggest_categorical("model", list(self.models))
        return {"model": model, **{p.name: p.suggest(trial) for p in self.params if p.applies_to(model)}}


def split_sweep_args(args: Iterable[str]) -> list[str]:
    """Each sweep item, whether given as separate arguments or as one quoted string."""
    return [item for arg in args for item in arg.split()]


def parse_sweep(items: Sequence[str], models: Sequence[ModelSpec], step_params: Sequence[HyperParam] = ()) -> Sweep:
    """Parse sweep items for ``models`` (and the task's ``step_params``); a problem raises ``UsageError`` naming the item."""
    params: list[SweepParam] = []
    seen: set[str] = set()
    for item in split_sweep_args(items):
        name, sep, body = item.partition(":")
        if not sep or not name:
            raise UsageError(f"malformed sweep item {item!r}; write {GRAMMAR}")
        if name == "model":
            raise UsageError("choose models with --models, not in the sweep")
        if name in seen:
            raise UsageError(f"{name} is swept twice; give all its values in one item, e.g. {name}:a,b")
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
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UsageError(
            f"unknown hyperparameter {name!r} for {', '.join(m.name for m in models)}; {hint}"
            f"sweepable: {', '.join(known)}"
        )
    kinds = {(p.kind, p.choices) for _, p in found}
    if len(kinds) > 1:
        raise UsageError(f"{name} has different types in {', '.join(n for n, _ in found)}; sweep one model at a time")
    return found[0][1], tuple(n for n, _ in found)


def _parse_body(item: str, name: str, body: str, schema: HyperParam, targets: tuple[str, ...]) -> SweepParam:
    if ".." in body:
        return _parse_range(item, name, body, schema, targets)
    texts = body.split(",")
    if not body or any(not t.strip() for t in texts):
        raise UsageError(f"sweep item {item!r} has an empty value; write {name}:v1,v2,...")
    try:
        values = tuple(dict.fromkeys(schema.parse(t) for t in texts))
    except ValueError as error:
        raise UsageError(f"in sweep item {item!r}: {error}") from None
    return SweepParam(name, schema.kind, targets, values=values)


def _parse_range(item: str, name: str, body: str, schema: HyperParam, targets: tuple[str, ...]) -> SweepParam:
    bounds, _, scale = body.partition(":")
    if "..." in bounds or bounds.count("..") > 1:
        raise UsageError(f"sweep item {item!r}: write a range with two dots, {name}:low..high")
    low_text, _, high_text = bounds.partition("..")
    if scale not in ("", "log"):
        raise UsageError(f"sweep item {item!r}: the only range option is ':log'")
    if schema.kind not in ("int", "float"):
        raise UsageError(f"sweep item {item!r}: {name} is a {schema.kind}; list its values as {name}:a,b")
    if not low_text or not high_text:
        raise UsageError(f"sweep item {item!r} needs both ends of the range; write {name}:low..high")
    try:
        low, high = schema.parse(low_text), schema.parse(high_text)
    except ValueError as error:
        raise UsageError(f"in sweep item {item!r}: {error}") from None
    if not low < high:
        raise UsageError(f"sweep item {item!r}: the range's low end must be below its high end")
    if scale == "log" and low <= 0:
        raise UsageError(f"sweep item {item!r}: a log range must start above 0")
    return SweepParam(name, schema.kind, targets, low=low, high=high, log=scale == "log")
