"""``--precision auto`` per model: decided from the model's own training steps, timed in each precision.

The machine's matmul measurement (``trainers.precision``) says whether a lower precision *can*
be faster on a device. It cannot say whether a given model gets that speed: a small model whose
time goes to casts, small kernels and per-operation overhead can run slower in bf16 (a small CNN
used 1.6x fp32's CPU time on a machine whose bf16 matmuls ran 1.95x faster). So where the machine
says a lower precision, ``decide_precision`` times a few training steps of the trial's model in
fp32 and in that precision, and keeps the lower one only where its steps are at least
``SPEEDUP`` times faster; where the machine says fp32, nothing is timed. A timing is kept per
key (the caller's: what changes a step's cost), so the points of a sweep that differ only in,
say, the learning rate are timed once.

The steps run on copies of the model and fresh optimizers, with torch's RNG state restored
afterwards: the trial's own training is unaffected, and a trial that ``auto`` runs in fp32 gives
the values of ``--precision fp32``.

A timing is also kept between searches, in ``step_timings.json`` beside the machine's matmul
measurement (``trainers.precision.cache_dir``), keyed by the machine and torch version, the code
of the model's class and of the task's step, the model's module tree (its ``repr``), the caller's
key and the shapes of a training batch:
a later search of the same model on the same data times nothing, so there ``auto`` costs
nothing over fp32. ``hpsearch doctor --remeasure`` forgets the timings of the machine.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import math
import statistics
import time
from collections.abc import Hashable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch
from torch import nn

from hpsearch.trainers.config import TrainConfig
from hpsearch.trainers.hardware import choose_precision, resolve_device
from hpsearch.trainers.precision import SPEEDUP, machine_key, read_cache, write_cache
from hpsearch.trainers.tasks import Task
from hpsearch.trainers.trainer import Trainer

#: Timed rounds, each one step in fp32 and one in the lower precision, after one warm-up step of each;
#: five, so that a burst of other load in one or two rounds does not decide (the median of their ratios does).
#: The timing stops as soon as three rounds agree: the median of five is then decided.
ROUNDS = 5
#: The file in ``cache_dir()`` that keeps timings between searches, and how many it keeps (the newest).
STEP_TIMINGS_CACHE = "step_timings.json"
MAX_STORED_TIMINGS = 500


@dataclass(frozen=True)
class StepTiming:
    """One model's training step timed in fp32 and in a lower precision, round by round."""

    lower: str  # the precision compared with fp32: bf16, or fp16 on CUDA without bf16
    fp32_seconds: tuple[float, ...]
    lower_seconds: tuple[float, ...]
    # When an earlier search took the timing (UTC, "2026-12-05 17:32"), where it was read from the kept
    # timings; empty where it was taken now.
    kept_from: str = ""

    @property
    def speedup(self) -> float:
        """How many times faster a step runs in ``lower`` than in fp32 (below 1: slower); the median of the rounds timed."""
        return statistics.median(f / s for f, s in zip(self.fp32_seconds, self.lower_seconds))

    @property
    def chosen(self) -> str:
        """``lower`` where its steps beat fp32's by ``SPEEDUP``, else fp32."""
        return self.lower if self.speedup >= SPEEDUP else "fp32"


def measure_step_speed(
    model: nn.Module,
    task: Task,
    config: TrainConfig,
    hparams: Mapping[str, Any],
    lower: str,
    rounds: int = ROUNDS,
    batch: Any = None,
) -> StepTiming:
    """Seconds of one training step of ``model`` on a batch of ``task``'s training data, in fp32 and in ``lower``.

    A step is the trainer's: the task's step under autocast, backward (through the gradient
    scaler), clipping and the optimizer's step. Each precision trains its own copy of ``model``
    with its own optimizer, built from ``config``; the precisions take turns, round by round, so
    a burst of other load on the machine hits both alike. ``batch`` is the training batch timed
    (default: the first of the task's training split).
    """
    device = resolve_device(config.device)
    # Copies, fresh optimizers and a forked RNG: nothing here reaches the trial's training.
    # Eager steps even under --compile: compiling two more copies would cost more than it tells.
    throwaway = {"checkpoints": "none", "checkpoint_dir": None, "compile": False}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # As Trainer.fit does: denormals would slow fp32's steps and not the lower precision's.
        torch.set_flush_denormal(True)
        trainers = {}
        for precision in ("fp32", lower):
            settings = config.with_overrides({**throwaway, "precision": precision})
            trainers[precision] = Trainer(copy.deepcopy(model), task, settings, hparams=hparams)
        if batch is None:
            batch = next(iter(trainers["fp32"].batches("train")))
        seconds: dict[str, list[float]] = {"fp32": [], lower: []}
        for round_ in range(rounds + 1):
            for precision, trainer in trainers.items():
                start = time.perf_counter()
                _train_step(trainer, batch)
                if round_:  # the first round warms up kernels, allocations and the optimizer's state
                    seconds[precision].append(time.perf_counter() - start)
            if _decided(seconds["fp32"], seconds[lower], rounds):
                break
    return StepTiming(lower, tuple(seconds["fp32"]), tuple(seconds[lower]))


def _decided(fp32: list[float], lower: list[float], rounds: int) -> bool:
    """Whether the rounds so far already fix the choice that the median of all ``rounds`` would make.

    Once more than half of the rounds fall on one side of ``SPEEDUP``, the median of all of them
    lies on that side whatever the rest measure: the rest would only cost the trial their steps.
    """
    faster = sum(f / s >= SPEEDUP for f, s in zip(fp32, lower))
    return max(faster, len(fp32) - faster) > rounds // 2


def _train_step(trainer: Trainer, batch: Any) -> None:
    """One optimizer step as ``Trainer._train_epoch`` takes it, without accumulation or the guard's bookkeeping."""
    out = trainer.run_step(batch, training=True)
    trainer.scaler.scale(out.loss).backward()
    trainer.scaler.unscale_(trainer.optimizer)
    max_grad_norm = trainer.config.grad_clip if trainer.config.grad_clip > 0 else math.inf
    norm = nn.utils.clip_grad_norm_(trainer.model.parameters(), max_grad_norm)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.optimizer.zero_grad(set_to_none=True)
    torch.stack([out.loss.detach().float(), norm.float()]).tolist()  # waits for the device, as the trainer's reads do


def decide_precision(
    model: nn.Module,
    task: Task,
    config: TrainConfig,
    hparams: Mapping[str, Any],
    timings: MutableMapping[Hashable, StepTiming],
    key: Hashable,
) -> tuple[str, StepTiming | None]:
    """The precision a trial of ``model`` runs in, and the step timing it was decided from (None: nothing timed).

    An explicit ``config.precision`` is returned as it is. ``auto`` is fp32 where the machine's
    matmul measurement says so, else the faster of fp32 and the lower precision on this model's
    own steps; ``timings`` holds them by ``key``, and a key found there is not timed again.
    """
    device = resolve_device(config.device)
    machine = choose_precision(config.precision, device)
    if config.precision != "auto" or machine == "fp32":
        return machine, None
    timing = timings.get(key)
    if timing is None:
        timing = timings[key] = _stored_or_measured(model, task, config, hparams, machine, key)
    return timing.chosen, timing


def _stored_or_measured(
    model: nn.Module, task: Task, config: TrainConfig, hparams: Mapping[str, Any], lower: str, key: Hashable
) -> StepTiming:
    """The timing an earlier search stored for these steps on this machine, else a new one, stored."""
    from hpsearch.models.code import code_hash
    from hpsearch.trainers.data import BatchSource

    device = resolve_device(config.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # The first batch as the trainer's shuffle would draw it, on a generator of its own.
        shuffle = torch.Generator().manual_seed(config.seed)
        batch = next(iter(BatchSource(task.train, config.batch_size, device, shuffle, shuffle=True)))
    # The module tree too: a builder that returns torch's own modules (nn.Sequential) has no code of
    # the user's class to hash, and an edited one kept its earlier timing.
    architecture = hashlib.sha256(repr(model).encode()).hexdigest()[:16]
    code = f"{code_hash(type(model), task.step_fn())}+{architecture}"
    stored_key = f"{_machine_prefix(device)}hpsearch {importlib.metadata.version('hpsearch')}|{code}|{key!r}|{lower}|{_shapes(batch)}"
    stored = read_cache(STEP_TIMINGS_CACHE)
    entry = stored.get(stored_key)
    if isinstance(entry, dict):
        try:
            taken = datetime.fromtimestamp(entry["at"], timezone.utc).strftime("%Y-%m-%d %H:%M")
            return StepTiming(lower, tuple(entry["fp32_seconds"]), tuple(entry["lower_seconds"]), taken)
        except (KeyError, TypeError, ValueError, OverflowError):
            pass  # written by another version: time again
    timing = measure_step_speed(model, task, config, hparams, lower, batch=batch)
    stored = read_cache(STEP_TIMINGS_CACHE)  # again: another worker may have stored meanwhile
    stored[stored_key] = {"fp32_seconds": timing.fp32_seconds, "lower_seconds": timing.lower_seconds, "at": time.time()}
    by_age = sorted(stored, key=lambda k: stored[k].get("at", 0) if isinstance(stored[k], dict) else 0)
    write_cache({k: stored[k] for k in by_age[-MAX_STORED_TIMINGS:]}, STEP_TIMINGS_CACHE)
    return timing


def _machine_prefix(device: torch.device) -> str:
    """How every stored timing's key for ``device`` on this machine begins."""
    return machine_key(device) + "|"


def kept_step_timings(device: torch.device) -> int:
    """How many step timings are kept for ``device`` on this machine."""
    return sum(k.startswith(_machine_prefix(device)) for k in read_cache(STEP_TIMINGS_CACHE))


def forget_step_timings(device: torch.device) -> int:
    """Drop the timings stored for ``device`` on this machine; how many there were."""
    stored = read_cache(STEP_TIMINGS_CACHE)
    mine = [k for k in stored if k.startswith(_machine_prefix(device))]
    if mine:
        write_cache({k: v for k, v in stored.items() if k not in mine}, STEP_TIMINGS_CACHE)
    return len(mine)


def _shapes(value: Any) -> str:
    """The shapes and dtypes of the tensors in a batch: what a step's cost depends on in the data."""
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')}{list(value.shape)}"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_shapes(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))) + "}"
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_shapes(v) for v in value) + ")"
    return type(value).__name__
