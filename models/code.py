"""``code_hash``: what a model builder, task or step *is*, so an edit in place is noticed.

A name and a ``module.qualname`` stay the same when a function is edited in its file or a
notebook cell is run again; the code does not. The hash covers the object's source and, found
through the global names it uses, every function and class of the same module it reaches,
so an edit to a helper the builder calls counts too. Comments and blank lines do not count,
nor does the code of hpsearch, installed packages and the standard library (torch's loss, a
torchmetrics class), which changes only with an upgrade.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import sys
import sysconfig
import tokenize
import types
from typing import Any

__all__ = ["code_hash"]


def code_hash(*objects: Any) -> str:
    """A short hex digest of the code of ``objects`` and of the same-module code they reach."""
    digest = hashlib.sha256()
    for part in _reached(objects):
        digest.update(_code_text(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _reached(objects: tuple[Any, ...]) -> list[Any]:
    """``objects`` (functions and classes) and the same-module ones they use, in a fixed order."""
    seen: dict[int, Any] = {}
    pending = [o for o in objects if o is not None]
    while pending:
        current = _unwrap(pending.pop())
        if id(current) in seen or not isinstance(current, (types.FunctionType, type)) or _is_library(current):
            continue
        seen[id(current)] = current
        module = getattr(current, "__module__", None)
        namespace = _globals(current)
        for name in sorted(_names_used(current)):
            used = _unwrap(namespace.get(name))
            if isinstance(used, (types.FunctionType, type)) and getattr(used, "__module__", None) == module:
                pending.append(used)
    return sorted(seen.values(), key=lambda o: f"{o.__module__}.{o.__qualname__}")


def _library_folders() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple({paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths})


def _is_library(obj: Any) -> bool:
    """Code of hpsearch, an installed package or the standard library: it changes only with an upgrade."""
    name = getattr(obj, "__module__", None) or ""
    if name == "hpsearch" or name.startswith("hpsearch."):
        return True
    file = getattr(sys.modules.get(name), "__file__", None)
    return file is not None and file.startswith(_library_folders())


def _unwrap(obj: Any) -> Any:
    # functools.partial and bound methods: the function behind them.
    obj = getattr(obj, "func", obj)
    return getattr(obj, "__func__", obj)


def _functions(obj: Any) -> list[types.FunctionType]:
    if isinstance(obj, types.FunctionType):
        return [obj]
    found = []
    for value in vars(obj).values():
        value = getattr(value, "__func__", value)  # staticmethod, classmethod
        if isinstance(value, property):
            value = value.fget
        if isinstance(value, types.FunctionType):
            found.append(value)
    return found


def _globals(obj: Any) -> dict[str, Any]:
    functions = _functions(obj)
    return functions[0].__globals__ if functions else {}


def _names_used(obj: Any) -> set[str]:
    names: set[str] = set()
    for function in _functions(obj):
        codes = [function.__code__]
        while codes:
            code = codes.pop()
            names.update(code.co_names)
            codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    if isinstance(obj, type):
        names.update(base.__name__ for base in obj.__bases__)
    return names


def _code_text(obj: Any) -> str:
    """The object's source without comments and blank lines; its bytecode where there is no source."""
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):  # a class defined in a notebook, or code built at run time
        functions = _functions(obj)
        try:
            source = "\n".join(inspect.getsource(f) for f in functions)
        except (OSError, TypeError):
            return repr([(f.__qualname__, f.__code__.co_code, repr(f.__code__.co_consts)) for f in functions])
    return _without_comments(source)


def _without_comments(source: str) -> str:
    try:
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        # Indentation by its structure, not its width: a block's end moved is an edit, a re-indent is not.
        kept = [
            tokenize.tok_name[t.type] if t.type in (tokenize.INDENT, tokenize.DEDENT) else t.string
            for t in tokens
            if t.type not in (tokenize.COMMENT, tokenize.NL)
        ]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source
    return " ".join(kept)
