"""Command-line arguments that several ``hpsearch`` commands share."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn, Sequence

from hpsearch.search.errors import UsageError
from hpsearch.trainers.config import TrainConfig
from hpsearch.trainers.hardware import DEVICES, PRECISIONS
from hpsearch.trainers.tasks import list_tasks


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one ``UsageError`` line, not usage + message.

    Abbreviated flags are off (``--epoch`` must not silently mean ``--epochs``), and
    descriptions keep their line breaks.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _lr_value(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'auto'") from None


# (TrainConfig field, argparse keyword arguments, help); the default shown is TrainConfig's.
TRAIN_OPTIONS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("epochs", {"type": int}, "epochs per trial"),
    ("batch_size", {"type": int}, "examples per micro-batch"),
    ("lr", {"type": _lr_value}, "peak learning rate, or 'auto' to run the LR range test per trial"),
    ("weight_decay", {"type": float}, "AdamW weight decay"),
    ("warmup_epochs", {"type": float}, "linear warmup, in epochs"),
    ("min_lr", {"type": float}, "LR at the end of the cosine decay"),
    ("grad_clip", {"type": float}, "max gradient norm, 0 for none"),
    ("label_smoothing", {"type": float}, "cross-entropy label smoothing"),
    ("grad_accum_steps", {"type": int}, "micro-batches per optimizer step"),
    ("early_stopping_patience", {"type": int}, "stop a trial after this many epochs without improvement, 0 for never"),
    ("precision", {"choices": PRECISIONS}, "auto: bf16 where the hardware runs it fast, else fp32"),
    ("device", {"choices": DEVICES}, "auto: CUDA, then MPS, then the CPU"),
    ("on_divergence", {"choices": ("prune", "reduce-lr")}, "prune the trial, or restore the last good epoch and halve the LR"),
    ("divergence_factor", {"type": float}, "a batch loss and running loss both above this multiple of the best running loss is divergence, 0 for off"),
    ("max_lr_reductions", {"type": int}, "how often reduce-lr may halve the LR in one trial"),
    ("compile", {"action": "store_true", "default": None}, "torch.compile the model"),
    ("deterministic", {"action": "store_true", "default": None}, "torch deterministic algorithms"),
    ("seed", {"type": int}, "seed for model init, data order and samplers"),
)
# (task option, type, help): the flags of every built-in task's options. A flag reaches the
# task only when given, and a flag the chosen task has no option for is an error; the help
# lists the tasks that take each one, with their defaults, from the task registry.
TASK_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("dataset_size", int, "examples in a generated task, 20%% of them for validation"),
    ("seq_len", int, "tokens per example"),
    ("vocab_size", int, "token ids"),
    ("num_classes", int, "labels"),
    ("data_seed", int, "seed of the generated data"),
    ("digits", int, "digits of each operand"),
    ("data", str, "the CSV file, one row per time step (in a study file: relative to the file)"),
    ("target", str, "the numeric column to forecast"),
    ("features", str, "the inputs: target (the target column alone) or all (every numeric column)"),
    ("window", int, "time steps the model sees"),
    ("horizon", int, "time steps it forecasts"),
    ("stride", int, "time steps between the starts of consecutive windows"),
    ("val_fraction", float, "share of the rows, after the training part, for validation"),
    ("test_fraction", float, "share of the last rows held out for testing"),
)
# The CLI's own defaults where they differ from TrainConfig's library defaults.
CLI_TRAIN_DEFAULTS = {"precision": "fp32", "device": "auto"}


def flags(name: str) -> list[str]:
    """``--dashed-name``, plus ``--underscored_name`` where it differs (the seed's spelling)."""
    dashed, underscored = f"--{name.replace('_', '-')}", f"--{name}"
    return [dashed] if dashed == underscored else [dashed, underscored]


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("task")
    group.add_argument("--task", default="synthetic_tokens", help="task: data, loss and metric (default: %(default)s)")
    for name, kind, text in TASK_OPTIONS:
        group.add_argument(*flags(name), dest=name, type=kind, help=f"{text} {_tasks_taking(name)}")


def _tasks_taking(option: str) -> str:
    """``[task: default, ...]`` for every registered task that has ``option``."""
    found = [(t.name, o.default) for t in list_tasks() for o in t.options if o.name == option]
    shown = ", ".join(f"{name}: {default!r}" if default != "" else name for name, default in found)
    return f"[{shown}]".replace("%", "%%")


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


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (fixed for every trial unless swept)")
    for name, kwargs, text in TRAIN_OPTIONS:
        default = CLI_TRAIN_DEFAULTS.get(name, getattr(TrainConfig, name))
        group.add_argument(*flags(name), dest=name, help=f"{text} (default: {default})", **kwargs)


def given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The options among ``names`` that the user set (argparse left the others None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def training_settings(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """The ``TrainConfig`` settings the user gave (over the CLI's defaults), and whether ``--lr auto``."""
    train = {**CLI_TRAIN_DEFAULTS, **given(args, [name for name, _, _ in TRAIN_OPTIONS])}
    lr_auto = train.get("lr") == "auto"
    if lr_auto:
        del train["lr"]
    return train, lr_auto


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The task options the user gave."""
    return given(args, [name for name, _, _ in TASK_OPTIONS])
