"""The attributes a trial's model and trainer leave on it: parameters, FLOPs, precision, worker, checkpoint."""

from __future__ import annotations

import os
import socket

import torch

from hpsearch.storage.attributes import CHECKPOINT_ATTR, PARAMS_COUNT_ATTR, PRECISION_ATTR, WORKER_ATTR
from hpsearch.trainers.flops import FlopsMeter
from hpsearch.trainers.hardware import device_label, resolve_device
from hpsearch.trainers.trainer import FitResult, Trainer, count_parameters


def model_costs(model: torch.nn.Module, meter: FlopsMeter) -> dict[str, object]:
    """The model's costs so far: its parameters and the ``flops.*`` statistics of its forward passes."""
    return {PARAMS_COUNT_ATTR: count_parameters(model), **meter.stats().as_user_attrs()}


def worker_name(device: str | torch.device) -> str:
    """This process as a trial's ``worker`` attribute names it: ``host:pid:device``."""
    label = device_label(resolve_device(device) if isinstance(device, str) else device)
    return f"{socket.gethostname()}:{os.getpid()}:{label}"


def model_attrs(model: torch.nn.Module, device: str | torch.device) -> dict[str, object]:
    """The model's parameters and the worker that holds it: ``host:pid:device``."""
    return {PARAMS_COUNT_ATTR: count_parameters(model), WORKER_ATTR: worker_name(device)}


def trainer_attrs(
    trainer: Trainer, model: torch.nn.Module, meter: FlopsMeter, result: FitResult | None, trained: bool
) -> dict[str, object]:
    """What the trainer knows at the end of a trial: parameters, FLOPs, precision, worker, checkpoint."""
    attrs = {**model_attrs(model, trainer.device), **model_costs(model, meter), PRECISION_ATTR: trainer.precision}
    if trained and trainer.checkpoints is not None:
        attrs[CHECKPOINT_ATTR] = str(trainer.checkpoints.last_path)
    if result is not None and result.lr_reductions:
        attrs["lr_reductions"] = result.lr_reductions
    return attrs
