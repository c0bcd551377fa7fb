"""The shared torch trainer and what it needs: tasks, data, steps, metrics, optimizers, LR schedules, FLOPs meter."""

from hpsearch.trainers.config import TRAINER_PARAMS, TrainConfig
from hpsearch.trainers.data import BatchSource, DataError
from hpsearch.trainers.metrics import MeanOf, MetricSet
from hpsearch.trainers.optim import register_optimizer
from hpsearch.trainers.records import EpochRecord, format_epoch_line
from hpsearch.trainers.schedule import LRSchedule
from hpsearch.trainers.step import Step, StepOutput, call_model, split_batch
from hpsearch.trainers.tasks import Task, TaskSpec, build_task, get_task, list_tasks, register_task
from hpsearch.trainers.trainer import DivergenceError, FitResult, Trainer, count_parameters, seed_everything

__all__ = [
    "TRAINER_PARAMS", "BatchSource", "DataError", "DivergenceError", "EpochRecord", "FitResult", "LRSchedule", "MeanOf",
    "MetricSet", "Step", "StepOutput", "Task", "TaskSpec", "TrainConfig", "Trainer", "build_task", "call_model",
    "count_parameters", "format_epoch_line", "get_task", "list_tasks", "register_optimizer", "register_task",
    "seed_everything", "split_batch",
]
