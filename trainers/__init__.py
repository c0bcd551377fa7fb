"""The shared torch trainer and what it needs: tasks, data, steps, metrics, optimizers, LR schedules, FLOPs meter."""

from __future__ import annotations

import importlib
from typing import Any

# Each name's module, imported when the name is first used: ``hpsearch --help`` reads the
# settings' and tasks' declarations from this package, and must not wait for torch.
_EXPORTS = {
    "TRAINER_PARAMS": "config", "TrainConfig": "config",
    "BatchSource": "data", "DataError": "data",
    "MeanOf": "metrics", "MetricSet": "metrics",
    "register_optimizer": "optim",
    "EpochRecord": "records", "format_epoch_line": "records",
    "LRSchedule": "schedule",
    "Step": "step", "StepOutput": "step", "call_model": "step", "split_batch": "step",
    "Task": "tasks",
    "TaskSpec": "task_registry", "build_task": "task_registry", "get_task": "task_registry",
    "list_tasks": "task_registry", "register_task": "task_registry",
    "DivergenceError": "trainer", "FitResult": "trainer", "Trainer": "trainer", "count_parameters": "trainer",
    "seed_everything": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
