"""The shared trainer: one loop for every model and task, reporting through callbacks."""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from hpsearch.trainers.config import TrainConfig
from hpsearch.trainers.records import EpochRecord
from hpsearch.trainers.schedule import WarmupCosineSchedule
from hpsearch.trainers.tasks import Task

EpochCallback = Callable[[EpochRecord], None]


class DivergenceError(RuntimeError):
    """Training stopped because the loss or the gradients blew up; ``reason`` says where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class FitResult:
    """What ``Trainer.fit`` returns: every epoch's record and how long it all took."""

    records: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def epochs_run(self) -> int:
        return len(self.records)

    @property
    def lr_history(self) -> list[float]:
        return [r.lr for r in self.records]


def seed_everything(seed: int) -> None:
    """Seed torch's global generators, so model init and dropout repeat exactly on CPU."""
    torch.manual_seed(seed)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated memory on a CUDA device, else the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # Linux reports ru_maxrss in KiB.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class Trainer:
    """Trains ``model`` on ``task`` with AdamW, warmup + cosine LR and gradient clipping.

    After every epoch it builds an ``EpochRecord`` and calls each callback with it, in order.
    A callback stops training by raising; the exception leaves ``fit`` unchanged. A
    ``flops_meter`` (``trainers.flops.FlopsMeter``) sees every forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        config: TrainConfig,
        callbacks: Sequence[EpochCallback] = (),
        flops_meter: object | None = None,
    ) -> None:
        self.device = torch.device(config.device)
        self.model = model.to(self.device)
        self.task = task
        self.config = config
        self.callbacks = list(callbacks)
        self.flops_meter = flops_meter
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def fit(self) -> FitResult:
        cfg, model, task, optimizer, meter = self.config, self.model, self.task, self.optimizer, self.flops_meter
        seed_everything(cfg.seed)
        shuffle = torch.Generator().manual_seed(cfg.seed)
        x_train, y_train = (t.to(self.device) for t in task.train)
        x_val, y_val = (t.to(self.device) for t in task.val)
        n_train = len(x_train)
        steps_per_epoch = math.ceil(n_train / cfg.batch_size)
        schedule = WarmupCosineSchedule(
            peak_lr=cfg.lr,
            total_steps=cfg.epochs * steps_per_epoch,
            warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
            min_lr=cfg.min_lr,
        )
        max_grad_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        result = FitResult()
        fit_start = time.perf_counter()
        step = 0

        for epoch in range(1, cfg.epochs + 1):
            epoch_start = time.perf_counter()
            model.train()
            loss_sum, grad_norms, clipped, nonfinite = 0.0, [], 0, 0
            for batch_index in torch.randperm(n_train, generator=shuffle).split(cfg.batch_size):
                lr = schedule(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = x_train[batch_index], y_train[batch_index]

                forward_start = time.perf_counter()
                outputs = model(x)
                if meter is not None:
                    meter.observe(x, time.perf_counter() - forward_start, training=True)
                loss = task.loss(outputs, y, cfg.label_smoothing)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise DivergenceError(f"diverged: loss={loss_value} at epoch {epoch} step {step + 1}")

                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm).item()
                if not math.isfinite(grad_norm):
                    raise DivergenceError(f"diverged: grad_norm={grad_norm} at epoch {epoch} step {step + 1}")
                clipped += grad_norm > max_grad_norm
                optimizer.step()

                loss_sum += loss_value * len(y)
                grad_norms.append(grad_norm)
                step += 1

            val_loss, metrics = self.evaluate(x_val, y_val)
            seconds = time.perf_counter() - epoch_start
            record = EpochRecord(
                epoch=epoch,
                lr=lr,
                train_loss=loss_sum / n_train,
                val_loss=val_loss,
                metrics=metrics,
                grad_norm_mean=sum(grad_norms) / len(grad_norms),
                grad_norm_max=max(grad_norms),
                nonfinite_steps=nonfinite,
                clipped_steps=int(clipped),
                epoch_seconds=seconds,
                samples_per_second=n_train / seconds,
                peak_memory_bytes=peak_memory_bytes(self.device),
            )
            result.records.append(record)
            result.seconds = time.perf_counter() - fit_start
            for callback in self.callbacks:
                callback(record)
        return result

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, dict[str, float]]:
        """Mean loss (without label smoothing) and the task's metrics over ``(x, y)``."""
        model, task, meter = self.model, self.task, self.flops_meter
        model.eval()
        loss_sum = 0.0
        metric_sums: dict[str, float] = {}
        for start in range(0, len(x), self.config.batch_size):
            xb, yb = x[start : start + self.config.batch_size], y[start : start + self.config.batch_size]
            forward_start = time.perf_counter()
            outputs = model(xb)
            if meter is not None:
                meter.observe(xb, time.perf_counter() - forward_start, training=False)
            loss_sum += task.loss(outputs, yb, 0.0).item() * len(yb)
            for name, value in task.metric_sums(outputs, yb).items():
                metric_sums[name] = metric_sums.get(name, 0.0) + float(value)
        value = loss_sum / len(x)
        if not math.isfinite(value):
            raise DivergenceError(f"diverged: val_loss={value}")
        return value, {name: total / len(x) for name, total in metric_sums.items()}
