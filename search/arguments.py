"""Command-line arguments that several ``hpsearch`` commands share."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NoReturn

from hpsearch.models import HyperParam, ValueRefused
from hpsearch.search.errors import UsageError, did_you_mean
from hpsearch.trainers.config import FLAG_SETTINGS
from hpsearch.trainers.task_registry import list_tasks


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one ``UsageError`` line, not usage + message.

    Abbreviated flags are off (``--epoch`` must not silently mean ``--epochs``), and
    descriptions keep their line breaks.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(allow_abbrev=False, **kwargs)

    # Options this command lacks that another one takes: name -> a hint that says where they go.
    # Called only on an error, so that building the other command's parser costs nothing otherwise.
    owned_elsewhere: Callable[[], Mapping[str, str]] | None = None

    def error(self, message: str) -> NoReturn:
        unknown = message.removeprefix("unrecognized arguments: ")
        if unknown != message:
            words = [word.split("=", 1)[0] for word in unknown.split() if word.startswith("--")]
            elsewhere = self.owned_elsewhere() if self.owned_elsewhere is not None and words else {}
            flags = [option for action in self._actions for option in action.option_strings]
            hints = (f" ({elsewhere[word]})" if word in elsewhere else did_you_mean(word, flags) for word in words)
            message += next((hint for hint in hints if hint), "")
        choice = re.fullmatch(r"(argument \S+: invalid choice: )'(.*)' \(choose from (.*)\)", message)
        if choice:
            head, given, listed = choice.groups()
            known = [name.strip().strip("'") for name in listed.split(",")]
            message = f"{head}{given!r}{did_you_mean(given, known)}; choose from {', '.join(known)}"
        raise UsageError(f"{message} (see {self.prog} --help)")


def _lr_value(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'auto'") from None


def _parser_of(param: HyperParam) -> Any:
    """An argparse ``type`` that parses and checks a value by the setting's declaration."""

    def parse(text: str) -> Any:
        try:
            return param.parse(text)
        except ValueRefused as error:
            raise argparse.ArgumentTypeError(error.reason) from None

    parse.__name__ = param.kind
    return parse


def setting_names() -> list[str]:
    """The trainer settings that have a flag (and a study-file ``[train]`` key)."""
    return [p.name for p in FLAG_SETTINGS]


def flags(name: str) -> list[str]:
    """``--dashed-name``, plus ``--underscored_name`` where it differs (the seed's spelling)."""
    dashed, underscored = f"--{name.replace('_', '-')}", f"--{name}"
    return [dashed] if dashed == underscored else [dashed, underscored]


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """``--task`` and a flag for every option of every registered task (plugins' too: load them first)."""
    group = parser.add_argument_group("task (options: each applies to the tasks listed after it, with their defaults)")
    group.add_argument("--task", help="task: data, step, loss and metrics (default: synthetic_tokens)")
    options: dict[str, HyperParam] = {}
    for task in list_tasks():
        for option in task.options:
            options.setdefault(option.name, option)
    for name, option in options.items():
        # Parsed against the chosen task's own schema later, since two tasks may type one name differently.
        try:
            group.add_argument(*flags(name), dest=name, metavar=option.kind.upper(), help=_task_option_help(name).replace("%", "%%"))
        except argparse.ArgumentError:
            continue  # a plugin task's option named like another flag (seed): set in a study file's [task] table


def task_option_names() -> list[str]:
    return sorted({option.name for task in list_tasks() for option in task.options})


def _task_option_help(option: str) -> str:
    """``option``'s help and ``[task: default, ...]`` for every registered task that has it; each task's own help where they differ."""
    found = [(t.name, o.help, o.default) for t in list_tasks() for o in t.options if o.name == option]

    def named(name: str, default: Any) -> str:
        return f"{name}: {default!r}" if default != "" else name

    if len({help for _, help, _ in found}) == 1:
        return f"{found[0][1]} [{', '.join(named(name, default) for name, _, default in found)}]"
    return "; ".join(f"[{named(name, default)}] {help}" for name, help, default in found)


def add_plugin_argument(parser: argparse.ArgumentParser) -> None:
    """``--plugin MODULE_OR_FILE.py``, repeatable, into ``args.plugins``."""
    parser.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        metavar="MODULE_OR_FILE.py",
        help="import this module or Python file first; its register_model / register_task calls add "
        "models and tasks (repeatable; installed packages add theirs through the hpsearch.plugins entry points)",
    )


def add_training_arguments(parser: argparse.ArgumentParser, leave_out: Collection[str] = (),
                           title: str = "training (fixed for every trial unless swept)") -> None:
    """A flag for every trainer setting, from its declaration in ``TrainConfig``, but those in ``leave_out``."""
    group = parser.add_argument_group(title)
    for param in (p for p in FLAG_SETTINGS if p.name not in leave_out):
        text = f"{param.help} (default: {str(param.default).lower() if isinstance(param.default, bool) else param.default})"
        if param.kind == "bool":
            group.add_argument(*flags(param.name), dest=param.name, action="store_true", default=None, help=text)
        elif param.name == "lr":
            group.add_argument(*flags(param.name), dest=param.name, type=_lr_value, help=text)
        else:
            metavar = "{" + ",".join(map(str, param.choices)) + "}" if param.choices else param.kind.upper()
            group.add_argument(*flags(param.name), dest=param.name, type=_parser_of(param), metavar=metavar, help=text.replace("%", "%%"))


def given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The options among ``names`` that the user set (argparse left the others None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def training_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``TrainConfig`` settings the user gave (``lr`` may be ``"auto"``)."""
    return given(args, setting_names())


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The task options the user gave, as text (checked against the chosen task later)."""
    return given(args, task_option_names())
