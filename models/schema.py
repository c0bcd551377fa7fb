"""Typed hyperparameter schema shared by models and the trainer."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

ParamKind = Literal["int", "float", "bool", "choice", "str"]

# A plain decimal or scientific literal: Python's float() also takes "1_0", "inf", "nan" and "1.",
# which read silently as something the user did not write.
_NUMBER = re.compile(r"[+-]?(\d+(\.\d+)?|\.\d+)([eE][+-]?\d+)?")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class ValueRefused(ValueError):
    """A value a ``HyperParam`` does not allow: ``str()`` is ``name: reason``; ``reason`` alone for
    callers that name the value their own way (a flag, a study file's key)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


@dataclass(frozen=True)
class HyperParam:
    """One hyperparameter: its name, type, default and the values it allows.

    ``low``/``high`` bound ``int`` and ``float`` values (inclusive); ``choices`` lists the
    values of a ``choice`` parameter.
    """

    name: str
    kind: ParamKind
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.choices is not None:
            # A list reads as naturally as a tuple, but a frozen spec must hash (sweeps key on it).
            object.__setattr__(self, "choices", tuple(self.choices))
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"choice parameter {self.name!r} needs choices")
        self.validate(self.default)

    @property
    def type_name(self) -> str:
        if self.kind == "choice":
            return "|".join(str(c) for c in self.choices or ())
        return self.kind

    def parse(self, text: str) -> Any:
        """Convert command-line text to a typed, validated value (``ValueRefused`` if it can't)."""
        raw = text.strip()
        if self.kind in ("int", "float"):
            self._check_literal(raw)
        try:
            if self.kind == "int":
                as_float = float(raw)
                if not as_float.is_integer():
                    raise ValueRefused(self.name, f"{raw!r} is not a whole number, and {self.name} is an int")
                value: Any = int(as_float)
            elif self.kind == "float":
                value = float(raw)
            elif self.kind == "str":
                value = raw
            elif self.kind == "bool":
                lowered = raw.lower()
                if lowered not in _TRUE | _FALSE:
                    raise ValueError
                value = lowered in _TRUE
            else:
                matches = [c for c in self.choices or () if str(c) == raw]
                if not matches:
                    raise ValueError
                value = matches[0]
        except ValueRefused:
            raise
        except ValueError:
            choose = f" (choose from {', '.join(map(str, self.choices or ()))})" if self.kind == "choice" else ""
            raise ValueRefused(self.name, f"{raw!r} is not a valid {self.kind}{choose}") from None
        return self.validate(value)

    def _check_literal(self, raw: str) -> None:
        if raw.lower() in ("true", "false"):  # what a Python or TOML sweep's True becomes
            raise ValueRefused(self.name, f"{raw!r} is a bool, and {self.name} is {'an' if self.kind == 'int' else 'a'} {self.kind}")
        if not _NUMBER.fullmatch(raw):
            raise ValueRefused(self.name, f"{raw!r} is not a valid {self.kind} (write a plain number such as 64, 0.001 or 1e-3)")
        value = float(raw)
        underflows = value == 0 and any(c in "123456789" for c in raw.lower().partition("e")[0])
        # Subnormal floats read as 0 in torch, which flushes them for speed (trainer.fit).
        if underflows or 0 < abs(value) < sys.float_info.min:
            raise ValueRefused(self.name, f"{raw!r} is too small for a float and would read as 0")

    def validate(self, value: Any) -> Any:
        """Return ``value`` if it is allowed, else raise ``ValueRefused`` saying why."""
        if self.kind == "choice":
            if value not in (self.choices or ()):
                raise ValueRefused(self.name, f"{value!r} is not one of {', '.join(map(str, self.choices or ()))}")
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise ValueRefused(self.name, f"{value!r} is not a string")
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueRefused(self.name, f"{value!r} is not a bool")
            return value
        if self.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueRefused(self.name, f"{value!r} is not an int")
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueRefused(self.name, f"{value!r} is not a finite float")
            value = float(value)
        if self.low is not None and value < self.low:
            raise ValueRefused(self.name, f"{value} is below the minimum {self.low:g}")
        if self.high is not None and value > self.high:
            raise ValueRefused(self.name, f"{value} is above the maximum {self.high:g}")
        return value


def resolve_values(params: Sequence[HyperParam], overrides: Mapping[str, Any], owner: str, noun: str) -> dict[str, Any]:
    """Every parameter's default with ``overrides`` validated and applied on top.

    This is the only place defaults meet chosen values, so a swept value can never be
    replaced by a default. An override ``params`` lacks is an error naming ``owner``.
    """
    unknown = sorted(set(overrides) - {p.name for p in params})
    if unknown:
        raise ValueError(f"{owner} has no {noun} {', '.join(unknown)}")
    return {p.name: p.validate(overrides[p.name]) if p.name in overrides else p.default for p in params}
