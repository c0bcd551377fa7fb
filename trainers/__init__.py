"""The shared torch trainer and what it needs: tasks, LR schedule, FLOPs meter."""

from hpsearch.trainers.config import TRAINER_PARAMS, TrainConfig
from hpsearch.trainers.records import EpochRecord, format_epoch_line
from hpsearch.trainers.schedule import WarmupCosineSchedule
from hpsearch.trainers.tasks import Task, TaskSpec, build_task, get_task, list_tasks, register_task
from hpsearch.trainers.trainer import DivergenceError, FitResult, Trainer, count_parameters, seed_everything

__all__ = [
    "TRAINER_PARAMS", "DivergenceError", "EpochRecord", "FitResult", "Task", "TaskSpec", "TrainConfig", "Trainer",
    "WarmupCosineSchedule", "build_task", "count_parameters", "format_epoch_line", "get_task", "list_tasks",
    "register_task", "seed_everything",
]
