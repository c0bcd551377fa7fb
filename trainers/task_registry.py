"""The task registry, and the declarations of the built-in tasks: name, options, description.

Kept apart from the tasks' code (``trainers.tasks``, ``trainers.arithmetic``,
``trainers.timeseries``), which imports torch: the CLI builds a flag for every task option, and
``hpsearch --help`` must not wait for torch. A built-in task's module is imported when the task
is first built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpsearch.models.registry import LazyBuilder, Registry, code_origin
from hpsearch.models.schema import HyperParam, resolve_values

if TYPE_CHECKING:
    from hpsearch.trainers.tasks import Task


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: ``build(**options)`` makes the ``Task``."""

    name: str
    build: Callable[..., Task]
    options: tuple[HyperParam, ...]
    description: str = ""

    def resolve(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults with every option given applied on top; an unknown option is an error."""
        return resolve_values(self.options, overrides, f"task {self.name!r}", "option")


_TASKS: Registry[TaskSpec] = Registry("task")


def register_task(
    name: str, build: Callable[..., Task], options: tuple[HyperParam, ...] | list[HyperParam], description: str = ""
) -> TaskSpec:
    """Add a task: ``build(**options)`` returns the ``Task``; ``options`` are its settings' schema.

    Registering the same name again from the same code replaces the task; a name taken by other
    code is an error.
    """
    return _TASKS.add(name, TaskSpec(name, build, tuple(options), description), code_origin(build))


def get_task(name: str) -> TaskSpec:
    """The registered task called ``name`` (``KeyError`` naming the known ones if absent)."""
    return _TASKS.get(name)


def task_origin(name: str) -> str | None:
    """``module.qualname`` of the builder registered as ``name`` (None if there is none)."""
    return _TASKS.origin(name)


def list_tasks() -> list[TaskSpec]:
    """Every registered task, by name."""
    return _TASKS.all()


def build_task(name: str, options: Mapping[str, Any]) -> Task:
    spec = get_task(name)
    return spec.build(**spec.resolve(options))


def _builtin(name: str, module: str, options: tuple[HyperParam, ...], description: str) -> None:
    register_task(name, LazyBuilder(f"hpsearch.trainers.{module}", name), options, description)


def _token_options(seq_len: int) -> tuple[HyperParam, ...]:
    return (
        HyperParam("dataset_size", "int", 4000, "examples, 20% held out for validation", low=10),
        HyperParam("seq_len", "int", seq_len, "tokens per example", low=2),
        HyperParam("vocab_size", "int", 32, "distinct token ids", low=2),
        HyperParam("num_classes", "int", 4, "labels", low=2),
        HyperParam("data_seed", "int", 0, "seed of the generated data"),
    )


MULTIPLICATION_OPTIONS = (
    # 9 digits keeps every product below 10**18, inside int64.
    HyperParam("digits", "int", 2, "digits of each operand (2: 0..99)", low=1, high=9),
    HyperParam("dataset_size", "int", 4000, "examples, 20% held out for validation", low=10),
    HyperParam("data_seed", "int", 0, "seed of the generated data"),
)

FEATURE_SETS = ("target", "all")

CSV_TIMESERIES_OPTIONS = (
    HyperParam("data", "str", "", "path of the CSV file, one row per time step"),
    HyperParam("target", "str", "OT", "numeric column to forecast"),
    # The target alone by default: on ETTh1 it forecasts OT better than all seven columns do.
    HyperParam("features", "choice", "target", "inputs: the target alone, or every numeric column", choices=FEATURE_SETS),
    HyperParam("window", "int", 96, "time steps the model sees", low=1),
    HyperParam("horizon", "int", 24, "time steps it forecasts", low=1),
    HyperParam("stride", "int", 1, "time steps between the starts of consecutive windows", low=1),
    # Train / validation / test 0.6 / 0.2 / 0.2 by time: the proportions of ETTh1's usual 12/4/4 months.
    HyperParam("val_fraction", "float", 0.2, "share of all rows for validation: those after the training rows (windows may look back into them)", low=0.01, high=0.9),
    HyperParam("test_fraction", "float", 0.2, "share of all rows, the last ones, held out for testing (windows may look back into validation's)", low=0.0, high=0.9),
)

# Each description is the first line of its builder's docstring (a test holds them equal).
_builtin(
    "synthetic_tokens", "tasks", _token_options(32),
    "Label = the token bucket (``token % num_classes``) most frequent in the first half.",
)
_builtin(
    "synthetic_parity", "tasks", _token_options(32),
    "The replaced system's task: uniform tokens, label = ``sum(tokens) % num_classes``.",
)
_builtin(
    "multiplication", "arithmetic", MULTIPLICATION_OPTIONS,
    "Multiply two ``digits``-digit numbers given as digit tokens; answer the product's digits.",
)
_builtin(
    "csv_timeseries", "timeseries", CSV_TIMESERIES_OPTIONS,
    "Forecast a CSV column (``--data PATH --target COL``) ``horizon`` steps ahead; MSE and MAE.",
)
