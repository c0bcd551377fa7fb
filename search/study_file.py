"""Study files: a whole search as TOML, for ``hpsearch run FILE.toml``.

Top-level keys are ``StudySpec`` fields (``models``, ``sweep``, ``study_name``, ``storage``,
``sampler``, ``pruner``, ``metric``, ``direction``, ``objectives``, ``n_trials``, ...), read
generically from the dataclass, so a field added to ``StudySpec`` is a key here too. Two
tables: ``[task]`` (``name`` plus the task's options) and ``[train]`` (trainer settings, as the
flags name them). ``sweep`` is a list of items, one string, or a table ``name = [values]`` /
``name = "low..high:log"``. Relative paths (``output_dir``, ``plugins`` files, the task's
``data``) are relative to the file's folder.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from hpsearch.models import ValueRefused
from hpsearch.search.arguments import setting_names
from hpsearch.search.errors import UsageError, did_you_mean
from hpsearch.search.plugins import plugin_key
from hpsearch.search.spec import StudySpec, with_absolute_paths
from hpsearch.trainers.config import SETTINGS, TrainConfig

SETTINGS_BY_NAME = {param.name: param for param in SETTINGS}

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

# Fields a file sets through its tables, not as top-level keys.
TABLE_FIELDS = {"task_options": "[task]", "train": "[train]"}
DEFAULT_TASK = next(f.default for f in fields(StudySpec) if f.name == "task")


@dataclass(frozen=True)
class StudyFile:
    """A parsed study file: the ``StudySpec`` fields it sets, paths already resolved."""

    path: Path
    values: dict[str, Any]


def read_study_file(path: str | Path) -> StudyFile:
    """Parse ``path`` into ``StudySpec`` field values; ``UsageError`` naming the file and key if wrong."""
    path = Path(path)
    raw = _load_toml(path)
    hints = get_type_hints(StudySpec)
    known = sorted((set(hints) - set(TABLE_FIELDS)) | {"task", "train"})
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{path}: {key}"
        if key == "task":
            values |= _task(value, path)
        elif key == "train":
            values |= _train(value, path)
        elif key == "sweep":
            values["sweep"] = sweep_items(value, where)
        elif key == "models" and isinstance(value, str):
            values["models"] = tuple(m for m in value.replace(",", " ").split() if m)
        elif key in TABLE_FIELDS:
            raise UsageError(f"{where}: set it with {TABLE_FIELDS[key]}")
        elif key in hints:
            values[key] = conform(value, hints[key], where)
        else:
            raise UsageError(f"{where}: unknown key{did_you_mean(key, known)}; keys: {', '.join(known)}")
    # Absolute, so that the spec stored with the study means the same to workers started elsewhere.
    base = path.resolve().parent
    if "output_dir" in values:
        values["output_dir"] = str(base / values["output_dir"])
    if "plugins" in values:
        values["plugins"] = tuple(plugin_key(p, base) for p in values["plugins"])
    return StudyFile(path, values)


def merge(file_values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The file's values with the command line's ``overrides`` on top.

    ``train`` and ``task_options`` merge key by key (a flag replaces one setting, not the
    table), except that another ``task`` drops the file's task options; ``plugins`` add up;
    every other field is replaced.
    """
    merged = dict(file_values)
    if overrides.get("task", merged.get("task", DEFAULT_TASK)) != merged.get("task", DEFAULT_TASK):
        merged.pop("task_options", None)
    for name, value in overrides.items():
        if name in ("train", "task_options"):
            merged[name] = {**merged.get(name, {}), **value}
        elif name == "plugins":
            merged[name] = tuple(dict.fromkeys([*merged.get(name, ()), *value]))
        else:
            merged[name] = value
    return merged


def _load_toml(path: Path) -> dict[str, Any]:
    if tomllib is None:
        raise UsageError("hpsearch run needs Python 3.11 or later, or the tomli package (pip install tomli)")
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such study file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: a folder, not a study file") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot be read ({error.strerror or error})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: not valid TOML: {error}") from None


def _task(value: Any, path: Path) -> dict[str, Any]:
    """``task = "name"``, or a ``[task]`` table of ``name`` and the task's options."""
    if isinstance(value, str):
        return {"task": value}
    if not isinstance(value, dict):
        raise UsageError(f"{path}: task must be a task's name or a [task] table (got {value!r})")
    options = dict(value)
    if "name" not in options:
        # Else its options would be read as the default task's, and refused as that task's.
        raise UsageError(f'{path}: [task] needs name = "TASK", the registered task its options are for')
    found: dict[str, Any] = {"task_options": options, "task": conform(options.pop("name"), str, f"{path}: [task] name")}
    found["task_options"] = with_absolute_paths(options, path.resolve().parent)
    return found


def _train(value: Any, path: Path) -> dict[str, Any]:
    """The ``[train]`` table: ``TrainConfig`` settings by their flag names (``lr = "auto"``: the LR finder)."""
    if not isinstance(value, dict):
        raise UsageError(f"{path}: train must be a [train] table of trainer settings (got {value!r})")
    names = setting_names()
    hints = get_type_hints(TrainConfig)
    train: dict[str, Any] = {}
    for key, setting in value.items():
        where = f"{path}: [train] {key}"
        if key not in names:
            raise UsageError(f"{where}: unknown setting{did_you_mean(key, names)}; settings: {', '.join(names)}")
        if (key, setting) == ("lr", "auto"):
            train[key] = setting
            continue
        train[key] = conform(setting, hints[key], where)
        try:
            if key in SETTINGS_BY_NAME:  # its choices and range, named as written here, not as a flag
                SETTINGS_BY_NAME[key].validate(train[key])
        except ValueRefused as error:
            raise UsageError(f"{where}: {error.reason}") from None
    return {"train": train}


def sweep_items(value: Any, where: str) -> tuple[str, ...]:
    """Sweep items from a list of items, one string of them, or a table (dict) of name -> values."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    if isinstance(value, dict):
        return tuple(f"{name}:{_sweep_values(values, f'{where}.{name}')}" for name, values in value.items())
    raise UsageError(f'{where}: write a list of items (["embed_dim:64,128"]) or a [sweep] table (got {value!r})')


def _sweep_values(values: Any, where: str) -> str:
    """A table entry as sweep grammar: a list -> ``a,b``; a string is grammar already (``1e-4..1e-2:log``)."""
    if isinstance(values, str):
        return values
    if isinstance(values, tuple) and len(values) == 2 and all(_is_number(v) for v in values):
        low, high = values
        raise UsageError(f"{where}: {values!r} reads as two values, not a range: write [{low}, {high}] for the two "
                         f"values, or \"{low}..{high}\" for the range")
    listed = list(values) if isinstance(values, (list, tuple)) else [values]
    if not listed or any(isinstance(v, (list, dict)) for v in listed):
        raise UsageError(f'{where}: give a list of values ([64, 128]) or a range ("1e-4..1e-2:log")')
    return ",".join(str(v).lower() if isinstance(v, bool) else str(v) for v in listed)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def conform(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the type ``hint`` names (a TOML array becomes a tuple); ``UsageError`` if it isn't one."""
    try:
        return _convert(value, hint)
    except TypeError as expected:
        raise UsageError(f"{where} must be {expected} (got {value!r})") from None


def _convert(value: Any, hint: Any) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        wanted = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option)
            except TypeError as expected:
                wanted.append(str(expected))
        raise TypeError(" or ".join(wanted))
    if origin in (tuple, list):
        wanted = f"a list of {_describe(args[0], plural=True) if args else 'values'}"
        if not isinstance(value, (list, tuple)):
            raise TypeError(wanted)
        try:
            converted = [_convert(item, args[0]) if args else item for item in value]
        except TypeError:
            raise TypeError(wanted) from None
        return tuple(converted) if origin is tuple else converted
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise TypeError("a table")
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise TypeError(_describe(hint))


def _describe(hint: Any, plural: bool = False) -> str:
    names = {str: ("a string", "strings"), int: ("an integer", "integers"), float: ("a number", "numbers"), bool: ("true or false", "booleans")}
    return names[hint][plural] if hint in names else getattr(hint, "__name__", str(hint))


