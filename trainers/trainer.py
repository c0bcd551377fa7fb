"""The shared trainer: one loop for every model and task, reporting through callbacks."""

from __future__ import annotations

import copy
import math
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from hpsearch.trainers.checkpoints import CheckpointStore, load_checkpoint
from hpsearch.trainers.config import TrainConfig
from hpsearch.trainers.divergence import DivergenceGuard
from hpsearch.trainers.hardware import autocast, choose_precision, grad_scaler, resolve_device
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
    """What ``Trainer.fit`` returns: every epoch's record (resumed ones included) and more."""

    records: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0
    precision: str = "fp32"
    stopped_early: bool = False
    lr_reductions: list[str] = field(default_factory=list)
    checkpoint: str | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.records)

    @property
    def lr_history(self) -> list[float]:
        return [r.lr for r in self.records]


@dataclass
class _Progress:
    """Where training stands between epochs: everything a resume needs besides the tensors."""

    epoch: int = 0
    step: int = 0
    lr_scale: float = 1.0
    best: float | None = None
    epochs_without_improvement: int = 0
    records: list[EpochRecord] = field(default_factory=list)
    lr_reductions: list[str] = field(default_factory=list)


def checkpoint_records(path: str | Path) -> list[EpochRecord]:
    """The epoch records saved in a trainer checkpoint, without loading it into a model."""
    return [EpochRecord(**r) for r in load_checkpoint(path)["progress"]["records"]]


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
    """Trains ``model`` on ``task``: AdamW, warmup + cosine LR, clipping, mixed precision.

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
        flops_meter: Any | None = None,
    ) -> None:
        self.device = resolve_device(config.device)
        self.precision = choose_precision(config.precision, self.device)
        self.model = model.to(self.device)
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.task = task
        self.config = config
        self.callbacks = list(callbacks)
        self.flops_meter = flops_meter
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scaler = grad_scaler(self.precision, self.device)
        self.checkpoints = CheckpointStore(config.checkpoint_dir) if config.checkpoint_dir else None
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.guard = DivergenceGuard(config.divergence_factor)

    def fit(self, resume_from: str | Path | None = None) -> FitResult:
        """Train for ``config.epochs`` epochs, or continue a checkpoint from its next epoch."""
        cfg, task = self.config, self.task
        # Denormal floats (e.g. far tails of an RBF kernel) slow CPU matmuls by orders of magnitude.
        torch.set_flush_denormal(True)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        seed_everything(cfg.seed)
        x_train, y_train = (t.to(self.device) for t in task.train)
        x_val, y_val = (t.to(self.device) for t in task.val)
        steps_per_epoch = math.ceil(math.ceil(len(x_train) / cfg.batch_size) / cfg.grad_accum_steps)
        schedule = WarmupCosineSchedule(
            peak_lr=cfg.lr,
            total_steps=cfg.epochs * steps_per_epoch,
            warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
            min_lr=cfg.min_lr,
        )
        progress = self._restore(load_checkpoint(resume_from)) if resume_from else _Progress()
        last_good = copy.deepcopy(self._state(progress)) if cfg.on_divergence == "reduce-lr" else None
        result = FitResult(precision=self.precision)
        fit_start = time.perf_counter()

        while progress.epoch < cfg.epochs and not result.stopped_early:
            epoch = progress.epoch + 1
            epoch_start = time.perf_counter()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            try:
                train = self._train_epoch(epoch, progress, schedule, x_train, y_train)
            except DivergenceError as error:
                if last_good is None:
                    raise
                if len(progress.lr_reductions) >= cfg.max_lr_reductions:
                    raise DivergenceError(f"{error.reason} (after {cfg.max_lr_reductions} LR reductions)") from None
                lr_scale, reductions = progress.lr_scale * 0.5, [*progress.lr_reductions, f"{error.reason}; lr halved"]
                progress = self._restore(copy.deepcopy(last_good))
                progress.lr_scale, progress.lr_reductions = lr_scale, reductions
                continue
            val_loss, metrics = self.evaluate(x_val, y_val)
            seconds = time.perf_counter() - epoch_start
            record = EpochRecord(
                epoch=epoch,
                val_loss=val_loss,
                metrics=metrics,
                epoch_seconds=seconds,
                samples_per_second=len(x_train) / seconds,
                peak_memory_bytes=peak_memory_bytes(self.device),
                **train,
            )
            progress.epoch = epoch
            progress.records.append(record)
            improved = self._track_best(progress, record)
            result.stopped_early = 0 < cfg.early_stopping_patience <= progress.epochs_without_improvement

            if self.checkpoints is not None:
                result.checkpoint = str(self.checkpoints.save(self._state(progress), is_best=improved))
            if last_good is not None:
                last_good = copy.deepcopy(self._state(progress))
            for callback in self.callbacks:
                callback(record)

        result.records = list(progress.records)
        result.lr_reductions = list(progress.lr_reductions)
        result.seconds = time.perf_counter() - fit_start
        return result

    def _train_epoch(
        self, epoch: int, progress: _Progress, schedule: WarmupCosineSchedule, x: torch.Tensor, y: torch.Tensor
    ) -> dict[str, float]:
        """One pass over the training data; returns the record fields it measured."""
        cfg, model, optimizer, scaler, meter = self.config, self.model, self.optimizer, self.scaler, self.flops_meter
        model.train()
        accumulate = cfg.grad_accum_steps
        max_grad_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        batches = torch.randperm(len(x), generator=self.shuffle).split(cfg.batch_size)
        loss_sum, grad_norms, clipped, skipped = 0.0, [], 0, 0
        lr = schedule(progress.step) * progress.lr_scale

        for index, batch in enumerate(batches):
            group_start = index - index % accumulate
            group_size = min(accumulate, len(batches) - group_start)
            if index == group_start:
                lr = schedule(progress.step) * progress.lr_scale
                for group in optimizer.param_groups:
                    group["lr"] = lr
            xb, yb = x[batch], y[batch]

            forward_start = time.perf_counter()
            with autocast(self.precision, self.device):
                outputs = self.forward(xb)
                loss = self.task.loss(outputs, yb, cfg.label_smoothing)
            if meter is not None:
                meter.observe(xb, time.perf_counter() - forward_start, training=True)
            loss_value = loss.item()
            reason = self.guard.check(loss_value, None, epoch, progress.step + 1)
            if reason:
                raise DivergenceError(reason)
            scaler.scale(loss / group_size).backward()
            loss_sum += loss_value * len(yb)
            if index != group_start + group_size - 1:
                continue

            scaler.unscale_(optimizer)
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm).item()
            if math.isfinite(grad_norm):
                clipped += grad_norm > max_grad_norm
                grad_norms.append(grad_norm)
            elif scaler.is_enabled():
                skipped += 1  # fp16 overflow: the scaler skips this step and lowers its scale
            else:
                raise DivergenceError(f"diverged: grad_norm={grad_norm} at epoch {epoch} step {progress.step + 1}")
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1

        return {
            "lr": lr,
            "train_loss": loss_sum / len(x),
            "grad_norm_mean": sum(grad_norms) / len(grad_norms) if grad_norms else math.nan,
            "grad_norm_max": max(grad_norms, default=math.nan),
            "nonfinite_steps": skipped,
            "clipped_steps": int(clipped),
        }

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, dict[str, float]]:
        """Mean loss (without label smoothing) and the task's metrics over ``(x, y)``."""
        model, task, meter, batch_size = self.model, self.task, self.flops_meter, self.config.batch_size
        model.eval()
        loss_sum = 0.0
        metric_sums: dict[str, float] = {}
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            forward_start = time.perf_counter()
            with autocast(self.precision, self.device):
                outputs = self.forward(xb)
            if meter is not None:
                meter.observe(xb, time.perf_counter() - forward_start, training=False)
            loss_sum += task.loss(outputs, yb, 0.0).item() * len(yb)
            for name, value in task.metric_sums(outputs, yb).items():
                metric_sums[name] = metric_sums.get(name, 0.0) + float(value)
        value = loss_sum / len(x)
        if not math.isfinite(value):
            raise DivergenceError(f"diverged: val_loss={value}")
        return value, {name: total / len(x) for name, total in metric_sums.items()}

    def _track_best(self, progress: _Progress, record: EpochRecord) -> bool:
        """Update the best monitored value; True when this epoch improved on it."""
        value = record.value(self.config.monitor)
        maximize = self.task.metric_directions.get(self.config.monitor) == "maximize"
        improved = progress.best is None or (value > progress.best if maximize else value < progress.best)
        if improved:
            progress.best = value
            progress.epochs_without_improvement = 0
        else:
            progress.epochs_without_improvement += 1
        return improved

    def _state(self, progress: _Progress) -> dict[str, Any]:
        """The full training state, as plain containers of tensors and numbers."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state()},
            "guard": self.guard.state_dict(),
            "progress": {**asdict(progress), "records": [asdict(r) for r in progress.records]},
        }

    def _restore(self, state: dict[str, Any]) -> _Progress:
        """Load a state from ``_state`` into the model, optimizer, RNGs and guard."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.shuffle.set_state(state["rng"]["shuffle"])
        self.guard.load_state_dict(state["guard"])
        saved = dict(state["progress"])
        saved["records"] = [EpochRecord(**r) for r in saved["records"]]
        return _Progress(**saved)
