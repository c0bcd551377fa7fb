"""The shared trainer: one loop for every model and task, reporting through callbacks."""

from __future__ import annotations

import copy
import math
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from hpsearch.models.schema import resolve_values
from hpsearch.trainers.checkpoints import CheckpointStore, load_checkpoint
from hpsearch.trainers.config import TrainConfig
from hpsearch.trainers.data import BatchSource, DataError, Split, batch_length
from hpsearch.trainers.divergence import DivergenceGuard
from hpsearch.trainers.hardware import autocast, choose_precision, grad_scaler, resolve_device
from hpsearch.trainers.metrics import MetricSet, as_float
from hpsearch.trainers.optim import build_optimizer
from hpsearch.trainers.precision import peak_flops, peak_outpaced, peak_precision
from hpsearch.trainers.records import EpochRecord
from hpsearch.trainers.schedule import LRSchedule
from hpsearch.trainers.step import StepOutput, as_step_output
from hpsearch.trainers.tasks import Task

EpochCallback = Callable[[EpochRecord], None]


class DivergenceError(RuntimeError):
    """Training stopped because the loss or the gradients blew up; ``reason`` says where.

    ``lr_reductions``: what ``--on-divergence reduce-lr`` did before it gave up, as ``FitResult``'s.
    """

    def __init__(self, reason: str, lr_reductions: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.lr_reductions = list(lr_reductions)


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
    """Seed torch's global generators, so model init and dropout repeat exactly."""
    if torch.accelerator.is_available():
        torch.manual_seed(seed)
    else:
        # The CPU's alone: without an accelerator, torch.manual_seed still queues a seed for each
        # kind of one (CUDA, XPU, MTIA), each recording the stack with its source lines: a few
        # hundred file stats a trial.
        torch.default_generator.manual_seed(seed)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated memory on a CUDA device, else the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # Linux reports ru_maxrss in KiB.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class Trainer:
    """Trains ``model`` on ``task``: the task's step inside everything the trainer keeps.

    Around each step: autocast and the gradient scaler, gradient accumulation and clipping, the
    optimizer and LR schedule, the divergence guard, and a ``flops_meter``
    (``trainers.flops.FlopsMeter``) hooked on the model, so it sees every forward pass a step
    makes. After every epoch it builds an ``EpochRecord``, saves a checkpoint and calls each
    callback with the record, in order; a callback stops training by raising.
    ``hparams`` are the trial's hyperparameters (the model's and the step's); the step gets them
    with the trainer's sweepable settings and the step's defaults filled in.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        config: TrainConfig,
        callbacks: Sequence[EpochCallback] = (),
        flops_meter: Any | None = None,
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        self.device = resolve_device(config.device)
        self.precision = choose_precision(config.precision, self.device)
        self.model = model.to(self.device)
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.task = task
        self.config = config
        self.callbacks = list(callbacks)
        # Called with the step count after each optimizer step; a check stops training by raising
        # (the search stops a trial whose heartbeat it can no longer store).
        self.step_checks: list[Callable[[int], None]] = []
        self.flops_meter = flops_meter
        if flops_meter is not None:
            flops_meter.attach(self.model)
            flops_meter.peak_flops = peak_flops(self.device, self.precision)
            flops_meter.precision = peak_precision(self.device, self.precision)  # whose peak the MFU is of
        step_names = {p.name for p in task.step_params}
        given = dict(hparams or {})
        self.hparams = {
            **config.sweepable_values(),
            **given,
            **resolve_values(task.step_params, {k: v for k, v in given.items() if k in step_names}, f"task {task.name}'s step", "hyperparameter"),
        }
        self.step = task.step_fn()
        self.optimizer = build_optimizer(
            config.optimizer, self.model, lr=config.lr, weight_decay=config.weight_decay,
            momentum=config.momentum, beta2=config.beta2, eps=config.eps,
        )
        self.scaler = grad_scaler(self.precision, self.device)
        keep = config.checkpoints
        self.checkpoints = CheckpointStore(config.checkpoint_dir, keep) if config.checkpoint_dir and keep != "none" else None
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.guard = DivergenceGuard(config.divergence_factor)
        self.directions = task.directions()
        # Read step values back every step on the CPU, where a read costs nothing; elsewhere in batches.
        self.sync_every = 1 if self.device.type == "cpu" else 16

    def batches(self, split: str) -> BatchSource:
        """The batches of the task's ``train`` or ``val`` split on this trainer's device."""
        cfg = self.config
        training = split == "train"
        return BatchSource(
            self.task.train if training else self.task.val,
            cfg.batch_size,
            self.device,
            self.shuffle if training else torch.Generator().manual_seed(cfg.seed),
            shuffle=training,
            num_workers=cfg.num_workers,
            where=f"task {self.task.name}'s {split} split",
        )

    def run_step(self, batch: Any, training: bool) -> StepOutput:
        """The task's step on one batch, inside autocast; validation sees no label smoothing."""
        hparams = self.hparams if training else {**self.hparams, "label_smoothing": 0.0}
        with autocast(self.precision, self.device):
            out = as_step_output(self.step(self.forward, batch, hparams))
        if not isinstance(out.loss, torch.Tensor) or out.loss.numel() != 1:
            shape = list(out.loss.shape) if isinstance(out.loss, torch.Tensor) else type(out.loss).__name__
            raise DataError(f"the step's loss is {shape}; a step returns one scalar loss (reduce it with .mean())")
        return out

    def fit(self, resume_from: str | Path | Mapping[str, Any] | None = None) -> FitResult:
        """Train for ``config.epochs`` epochs, or continue a checkpoint (a path, or a state already loaded) from its next epoch."""
        cfg = self.config
        # Denormal floats (e.g. far tails of an RBF kernel) slow CPU matmuls by orders of magnitude.
        torch.set_flush_denormal(True)
        if cfg.deterministic:
            # cuBLAS repeats its results only with a fixed workspace, read when its first handle is made.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        seed_everything(cfg.seed)
        train_batches, val_batches = self.batches("train"), self.batches("val")
        steps_per_epoch = math.ceil(len(train_batches) / cfg.grad_accum_steps)
        schedule = LRSchedule(
            peak_lr=cfg.lr,
            total_steps=cfg.epochs * steps_per_epoch,
            warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
            min_lr=cfg.min_lr,
            kind=cfg.scheduler,
            gamma=cfg.step_gamma,
            step_every=max(1, round(cfg.step_every_epochs * steps_per_epoch)),
        )
        if resume_from is None:
            progress = _Progress()
        else:
            progress = self._restore(dict(resume_from) if isinstance(resume_from, Mapping) else load_checkpoint(resume_from))
        last_good = copy.deepcopy(self._state(progress)) if cfg.on_divergence == "reduce-lr" else None
        result = FitResult(precision=self.precision)
        fit_start = time.perf_counter()

        while progress.epoch < cfg.epochs and not result.stopped_early:
            epoch = progress.epoch + 1
            epoch_start = time.perf_counter()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            train_batches.set_epoch(epoch)
            val_batches.set_epoch(epoch)
            counted = self.flops_meter.train_progress() if self.flops_meter is not None else None
            try:
                train, samples = self._train_epoch(epoch, progress, schedule, train_batches)
            except DivergenceError as error:
                if last_good is None:
                    raise
                if len(progress.lr_reductions) >= cfg.max_lr_reductions:
                    raise DivergenceError(f"{error.reason} (after {cfg.max_lr_reductions} LR reductions)",
                                          progress.lr_reductions) from None
                lr_scale, reductions = progress.lr_scale * 0.5, [*progress.lr_reductions, f"{error.reason}; lr halved"]
                progress = self._restore(copy.deepcopy(last_good))
                progress.lr_scale, progress.lr_reductions = lr_scale, reductions
                continue
            val_loss, metrics = self.evaluate(val_batches)
            seconds = time.perf_counter() - epoch_start
            record = EpochRecord(
                epoch=epoch,
                val_loss=val_loss,
                metrics={**metrics, **train.pop("logs")},
                epoch_seconds=seconds,
                samples_per_second=samples / seconds,
                peak_memory_bytes=peak_memory_bytes(self.device),
                mfu=self._epoch_mfu(counted),
                **train,
            )
            progress.epoch = epoch
            progress.records.append(record)
            improved = self._track_best(progress, record)
            result.stopped_early = 0 < cfg.early_stopping_patience <= progress.epochs_without_improvement

            if self.checkpoints is not None:
                saved = self.checkpoints.save(self._state(progress), is_best=improved)
                result.checkpoint = str(saved) if saved is not None else result.checkpoint
            if last_good is not None:
                last_good = copy.deepcopy(self._state(progress))
            for callback in self.callbacks:
                callback(record)

        result.records = list(progress.records)
        result.lr_reductions = list(progress.lr_reductions)
        result.seconds = time.perf_counter() - fit_start
        return result

    def _train_epoch(
        self, epoch: int, progress: _Progress, schedule: LRSchedule, batches: BatchSource
    ) -> tuple[dict[str, Any], int]:
        """One pass over the training data; returns the record fields it measured and the examples seen.

        Each step's loss, gradient norm and logged values stay on the device and are read back
        together every ``sync_every`` steps and at the epoch's end (``_StepReadings``): on a GPU a
        read is a host sync, which stalls the queue of kernels. The guard then checks them in
        order, so its verdicts, and the step it names, are those of checking every step.
        """
        cfg, model, optimizer, scaler = self.config, self.model, self.optimizer, self.scaler
        model.train()
        accumulate = cfg.grad_accum_steps
        max_grad_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        n_batches = len(batches)
        readings = _StepReadings(self.guard, epoch, max_grad_norm, scaler.is_enabled())
        lr = schedule(progress.step) * progress.lr_scale

        for index, batch in enumerate(batches):
            group_start = index - index % accumulate
            group_size = min(accumulate, n_batches - group_start)
            if index == group_start:
                lr = schedule(progress.step) * progress.lr_scale
                for group in optimizer.param_groups:
                    group["lr"] = lr

            out = self.run_step(batch, training=True)
            size = batch_length(out.targets if out.targets is not None else batch)
            readings.loss(out.loss.detach(), size, progress.step + 1, out.logs)
            scaler.scale(out.loss / group_size).backward()
            if index != group_start + group_size - 1:
                continue

            scaler.unscale_(optimizer)
            readings.grad_norm(nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm).detach(), progress.step + 1)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            for check in self.step_checks:
                check(progress.step)
            if len(readings.pending) >= self.sync_every:
                readings.read()
        readings.read()
        return readings.fields(lr), readings.samples

    @torch.no_grad()
    def evaluate(self, split: Split | BatchSource | None = None) -> tuple[float, dict[str, float]]:
        """Mean loss (without label smoothing), the task's metrics over the whole split, and the step's logs.

        ``split`` is the task's validation split by default; any split (``task.test``) works.
        """
        if split is None:
            batches = self.batches("val")
        elif isinstance(split, BatchSource):
            batches = split
        else:
            batches = BatchSource(split, self.config.batch_size, self.device, torch.Generator(), shuffle=False, num_workers=self.config.num_workers)
        self.model.eval()
        metrics = MetricSet(self.task.metrics, self.device)
        loss_sum, samples = 0.0, 0
        logs: dict[str, float] = {}
        for batch in batches:
            out = self.run_step(batch, training=False)
            size = batch_length(out.targets if out.targets is not None else batch)
            loss_sum += out.loss.item() * size
            samples += size
            if metrics.metrics and out.outputs is not None:
                metrics.update(_full_precision(out.outputs), out.targets)
            for name, value in out.logs.items():
                logs[name] = logs.get(name, 0.0) + as_float(value) * size
        value = loss_sum / max(samples, 1)
        if not math.isfinite(value):
            raise DivergenceError(f"diverged: val_loss={value}")
        computed = metrics.compute() if samples else {}
        return value, {**computed, **{f"val_{name}": total / samples for name, total in logs.items()}}

    def _epoch_mfu(self, before: tuple[int, float] | None) -> float:
        """Training FLOP/s since ``before`` (the meter's count at the epoch's start) over the peak."""
        meter = self.flops_meter
        if meter is None or before is None or not meter.peak_flops:
            return math.nan
        flops, seconds = (now - then for now, then in zip(meter.train_progress(), before))
        if seconds <= 0:
            return math.nan
        if flops / seconds > meter.peak_flops:  # the peak was measured while the machine was busy
            meter.peak_flops = peak_outpaced(self.device, self.precision, flops / seconds)
        return flops / seconds / meter.peak_flops

    def _track_best(self, progress: _Progress, record: EpochRecord) -> bool:
        """Update the best monitored value; True when this epoch improved on it."""
        value = record.value(self.config.monitor)
        maximize = self.directions.get(self.config.monitor) == "maximize"
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


def _full_precision(outputs: Any) -> Any:
    """Autocast's half-precision outputs as float32, which every metric takes."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() and outputs.dtype != torch.float64 else outputs
    if isinstance(outputs, Mapping):
        return {k: _full_precision(v) for k, v in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(_full_precision(v) for v in outputs)
    return outputs


class _StepReadings:
    """One epoch's per-step values: kept on the device, read back in batches, checked in order.

    ``loss`` and ``grad_norm`` queue a step's values; ``read`` fetches everything queued with one
    transfer and runs the divergence guard over it as if each step had been checked on its own.
    """

    def __init__(self, guard: DivergenceGuard, epoch: int, max_grad_norm: float, scaler_enabled: bool) -> None:
        self.guard, self.epoch, self.max_grad_norm, self.scaler_enabled = guard, epoch, max_grad_norm, scaler_enabled
        self.pending: list[tuple[str, int, int, dict[str, Any]]] = []  # (kind, step, size, logs)
        self.values: list[torch.Tensor] = []
        self.loss_sum, self.samples, self.clipped, self.skipped = 0.0, 0, 0, 0
        self.grad_norms: list[float] = []
        self.logs: dict[str, float] = {}

    def loss(self, value: torch.Tensor, size: int, step: int, logs: Mapping[str, Any]) -> None:
        self.pending.append(("loss", step, size, dict(logs)))
        self.values.append(value.float().reshape(()))

    def grad_norm(self, value: torch.Tensor, step: int) -> None:
        self.pending.append(("grad", step, 0, {}))
        self.values.append(value.float().reshape(()))

    def read(self) -> None:
        if not self.pending:
            return
        numbers = torch.stack(self.values).tolist()  # the one host sync for all of them
        pending, self.pending, self.values = self.pending, [], []
        for (kind, step, size, logs), number in zip(pending, numbers):
            if kind == "loss":
                reason = self.guard.check(number, None, self.epoch, step)
                if reason:
                    raise DivergenceError(reason)
                self.loss_sum += number * size
                self.samples += size
                for name, value in logs.items():
                    self.logs[name] = self.logs.get(name, 0.0) + as_float(value) * size
            elif math.isfinite(number):
                self.clipped += number > self.max_grad_norm
                self.grad_norms.append(number)
            elif self.scaler_enabled:
                self.skipped += 1  # fp16 overflow: the scaler skipped this step and lowered its scale
            else:
                raise DivergenceError(f"diverged: grad_norm={number} at epoch {self.epoch} step {step}")

    def fields(self, lr: float) -> dict[str, Any]:
        """The epoch record's training fields."""
        norms, samples = self.grad_norms, max(self.samples, 1)
        return {
            "lr": lr,
            "train_loss": self.loss_sum / samples,
            "grad_norm_mean": sum(norms) / len(norms) if norms else math.nan,
            "grad_norm_max": max(norms, default=math.nan),
            "nonfinite_steps": self.skipped,
            "clipped_steps": int(self.clipped),
            "logs": {f"train_{name}": total / samples for name, total in self.logs.items()},
        }
