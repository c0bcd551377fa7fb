"""Plugins: user modules whose ``register_model`` / ``register_task`` calls add models and tasks.

A plugin is named by ``--plugin`` (a module name, or the path of a ``.py`` file), by
``plugins = [...]`` in a study file, or by an installed package through the entry-point
group ``hpsearch.plugins``. Importing it is what registers its models and tasks; an entry
point that names a function (``package.module:register``) is called once after loading.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from hpsearch.models import get_model, list_models
from hpsearch.models.code import code_hash
from hpsearch.models.registry import model_origin, register_model
from hpsearch.search.arguments import add_plugin_argument
from hpsearch.search.errors import UsageError
from hpsearch.trainers.task_registry import get_task, list_tasks, register_task, task_origin

if TYPE_CHECKING:
    from hpsearch.trainers.tasks import Task

ENTRY_POINT_GROUP = "hpsearch.plugins"

# Plugins already imported, by plugin_key: loading is idempotent, so a plugin named both on the
# command line and in a study file (or stored in the study for workers) registers once.
_loaded: dict[str, ModuleType | None] = {}
# Which plugin registered each model and task ("model:NAME" / "task:NAME"), for error messages.
_origins: dict[str, str] = {}
_entry_points_loaded = False


def is_file_plugin(name: str) -> bool:
    """Whether ``name`` is a file path (``.py``, or with a slash) rather than a module name."""
    return name.endswith(".py") or "/" in name or "\\" in name


def plugin_key(name: str, base: Path) -> str:
    """How a plugin is stored: a file as an absolute path (relative ones from ``base``), a module as named.

    Absolute paths let workers started elsewhere load the same file.
    """
    if not is_file_plugin(name):
        return name
    return str((base / Path(name).expanduser()).resolve())


def plugin_origin(kind: str, name: str) -> str | None:
    """The plugin that registered model or task ``name`` (``kind`` is "model" or "task"); None if built in."""
    return _origins.get(f"{kind}:{name}")


def load_plugins(names: Iterable[str]) -> None:
    """Import the installed entry-point plugins (once), then each plugin in ``names``.

    Raises ``UsageError`` naming the plugin when one fails to import or registers a name that
    is already taken.
    """
    load_entry_points()
    for name in names:
        load_plugin(name)


def load_plugin(name: str) -> ModuleType | None:
    """Import one plugin (a module name or a ``.py`` path) unless it was imported already."""
    if name in _loaded:
        return _loaded[name]
    label = f"plugin {name}"
    if is_file_plugin(name) and not Path(name).is_file():
        raise UsageError(f"{label}: no such file")
    with _registering(label):
        module = _import_file(Path(name)) if is_file_plugin(name) else importlib.import_module(name)
    _loaded[name] = module
    return module


def load_entry_points() -> None:
    """Load every ``hpsearch.plugins`` entry point of the installed packages, the first time only."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        with _registering(f"plugin entry point {point.name} ({point.value})"):
            loaded = point.load()
            if callable(loaded) and not isinstance(loaded, (ModuleType, type)):
                loaded()


def _import_file(path: Path) -> ModuleType:
    """Import the file at ``path`` as a module of its own, under a name no other file gets."""
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    module_name = f"hpsearch_plugin_{re.sub(r'[^0-9A-Za-z_]', '_', resolved.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path} as Python source")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses and pickle look a module up in sys.modules by name.
    sys.modules[module_name] = module
    # The plugin's folder first while it runs, as for `python plugin.py`, so `import helpers` finds the
    # file beside it; afterwards last, so a later lazy import finds it without it shadowing packages.
    folder = str(resolved.parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    finally:
        sys.path.remove(folder)
        if folder not in sys.path:
            sys.path.append(folder)
    return module


@contextmanager
def _registering(label: str) -> Iterator[None]:
    """Run a plugin's import: note what it registers, turn whatever it raises into one ``UsageError``."""
    before = _registered()
    try:
        yield
    except UsageError:
        raise
    except (Exception, SystemExit) as error:  # noqa: BLE001  a plugin may raise anything; the user gets one line
        if _raised_by_registry(error):
            raise UsageError(f"{label}: {error}; give it another name") from None
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UsageError(f"{label} failed to import: {type(error).__name__}: {text}".rstrip(": ")) from None
    finally:
        # New names, and names registered again: a script that imported the plugin file itself
        # before passing it as a plugin registered them first, from the same code.
        for key, entry in _registered().items():
            if before.get(key) is not entry:
                _origins[key] = label


def _registered() -> dict[str, object]:
    """Every registered model and task (``model:NAME``, ``task:NAME``), with its registry entry."""
    return {f"model:{m.name}": m for m in list_models()} | {f"task:{t.name}": t for t in list_tasks()}


def _raised_by_registry(error: BaseException) -> bool:
    """Whether ``error`` is the registry refusing a name already taken (a ValueError inside a register call)."""
    registering = {register_model.__code__, register_task.__code__}
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code in registering:
            return isinstance(error, ValueError)
        trace = trace.tb_next
    return False


def user_origin(kind: str, name: str) -> str | None:
    """Where a user's model or task came from: its plugin, or the code that registered it; None if built in."""
    label = plugin_origin(kind, name)
    if label is not None:
        return label
    origin = model_origin(name) if kind == "model" else task_origin(name)
    if origin is None or origin.startswith("hpsearch."):
        return None
    return "given to search()" if origin.startswith("given to search()") else f"registered by {origin}"


def code_identity(models: Sequence[str], task: Task) -> dict[str, str]:
    """A hash of the user code behind each model and the task (``model NAME``, ``task NAME``).

    The task's hash covers its factory, loss, step and metrics as built. Built-in models and
    tasks change only with hpsearch itself, and have none.
    """
    identity = {f"model {name}": code_hash(get_model(name).build) for name in models if user_origin("model", name)}
    if user_origin("task", task.name):
        step = task.step.fn if task.step is not None else None
        identity[f"task {task.name}"] = code_hash(get_task(task.name).build, task.loss, step, *task.metrics.values())
    return identity


def trial_code(identity: dict[str, str], model: str, task: str) -> str | None:
    """The hash of the user code a trial of ``model`` on ``task`` runs (its ``code`` attribute); None if all built in."""
    return "+".join(identity[k] for k in (f"model {model}", f"task {task}") if k in identity) or None


def preload_plugins(argv: Sequence[str], more: Sequence[str] = ()) -> None:
    """Load the plugins ``--plugin`` names (and ``more``) before the parser is built: their tasks add flags."""
    scout = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_plugin_argument(scout)
    known, _ = scout.parse_known_args(argv)
    load_plugins([*more, *(plugin_key(p, Path.cwd()) for p in known.plugins or ())])
