"""Precision by measurement: what ``--precision auto`` picks, and the peak FLOP/s that MFU divides by.

CPU flags cannot tell a machine whose bf16 matmuls run 4.5x faster than fp32 from one where they
run 1.9x slower; a measurement can. ``measure`` times a fixed workload, a square matmul, in each
candidate precision on the actual device (fp32, bf16 autocast, and fp16 autocast on CUDA
without bf16). ``auto`` picks bf16 (or fp16) only where it is at least ``SPEEDUP`` times faster
than fp32. The result is cached per machine, device and torch version in the user's cache
directory (``$HPSEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/hpsearch``, else
``~/.cache/hpsearch``), so each machine measures once. ``hpsearch doctor`` prints it. Where it
says bf16 (or fp16), a search still times each model's own training steps before taking it
(``trainers.step_speed``): a matmul's speed is not every model's.

Peak FLOP/s for MFU: on GPUs the datasheet's dense peak of the chosen precision (a small table,
``DATASHEET_PEAKS``); on CPUs, and GPUs not in the table, the measured matmul rate of the
workload below, the best of its repeats.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from hpsearch.trainers.hardware import autocast

#: The file in ``cache_dir()`` that holds each machine's matmul measurement.
PRECISION_CACHE = "precision.json"
#: How much faster a lower precision must be before ``auto`` takes it.
SPEEDUP = 1.15
#: Dense (no sparsity) peak FLOP/s by GPU name fragment and precision; fp32 without TF32.
DATASHEET_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
    "L40S": {"bf16": 362e12, "fp16": 362e12, "fp32": 91.6e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "fp32": 30.3e12},
    "A10G": {"bf16": 70e12, "fp16": 70e12, "fp32": 31.2e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},
    "T4": {"fp16": 65e12, "fp32": 8.1e12},
}


@dataclass(frozen=True)
class PrecisionChoice:
    """What was measured on one device and what ``auto`` picks there."""

    device: str
    torch_version: str
    flops_per_second: dict[str, float]  # candidate precision -> measured matmul FLOP/s
    chosen: str
    matmul_size: int
    measured_at: str = ""  # UTC, "2026-12-02 04:35"; empty in caches written before it was kept

    def speedup(self, precision: str) -> float:
        return self.flops_per_second[precision] / self.flops_per_second["fp32"]


def device_name(device: torch.device) -> str:
    """The hardware behind ``device``: the GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine()
    return device.type


def cache_dir() -> Path:
    if os.environ.get("HPSEARCH_CACHE_DIR"):
        return Path(os.environ["HPSEARCH_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpsearch"


def candidates(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return ["fp32", "bf16"] if torch.cuda.is_bf16_supported() else ["fp32", "fp16"]
    if device.type == "cpu":
        return ["fp32", "bf16"]
    return ["fp32"]


def measure(device: torch.device, size: int = 1024, repeats: int = 10) -> dict[str, float]:
    """Matmul FLOP/s of a ``size`` x ``size`` product in each candidate precision, the best of ``repeats``.

    The operands are fp32, as a model's are, so autocast's casts are part of what is timed. The
    precisions take turns, round by round, so a burst of other load on the machine hits them
    alike; the best round of each is its speed, the least disturbed.
    """
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=generator)
    b = torch.randn(size, size, device=device, generator=generator)
    best = dict.fromkeys(candidates(device), float("inf"))
    for round_ in range(repeats + 1):
        for precision in best:
            _synchronize(device)
            start = time.perf_counter()
            with autocast(precision, device):
                (a @ b).sum()
            _synchronize(device)
            if round_:  # the first round warms up kernels and caches
                best[precision] = min(best[precision], time.perf_counter() - start)
    return {precision: 2 * size**3 / seconds for precision, seconds in best.items()}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def choose(rates: dict[str, float]) -> str:
    """The fastest precision, a lower one only where it beats fp32 by ``SPEEDUP``."""
    lower = [p for p in rates if p != "fp32" and rates[p] >= SPEEDUP * rates["fp32"]]
    return max(lower, key=rates.__getitem__) if lower else "fp32"


def machine_key(device: torch.device) -> str:
    """What a measurement on ``device`` holds for: this machine, the device and the torch version."""
    return f"{platform.node()}|{device_name(device)}|{device.type}|torch {torch.__version__}"


def read_cache(name: str = PRECISION_CACHE) -> dict[str, Any]:
    """The JSON object cached in the file ``name`` of ``cache_dir()``; empty when there is none or it is unreadable."""
    try:
        cached = json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}


def write_cache(entries: dict[str, Any], name: str = PRECISION_CACHE) -> None:
    """Replace the file ``name`` of ``cache_dir()`` with ``entries``, whole or not at all."""
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(entries, indent=1, sort_keys=True))
        os.replace(partial, path)
    except OSError:
        pass  # a read-only home: measure again next time rather than fail


def cached_choice(device: torch.device) -> PrecisionChoice | None:
    """The measurement this machine cached for ``device``, or None when there is none (or it is unreadable)."""
    entry = read_cache().get(machine_key(device))
    if not isinstance(entry, dict):
        return None
    try:
        return PrecisionChoice(**entry)
    except TypeError:
        return None  # written by another version: measure again


def precision_choice(device: torch.device, remeasure: bool = False) -> PrecisionChoice:
    """The measurement for ``device``, from the cache when this machine has one.

    ``remeasure`` measures again, and each precision keeps the higher of its cached and new rate:
    load on the machine only ever lowers one, so the lower was taken while it was busy.
    """
    cached = cached_choice(device)
    if cached is not None and not remeasure:
        return cached
    size = 1024 if device.type == "cpu" else 4096
    rates = measure(device, size)
    if cached is not None:
        rates = {p: max(rate, cached.flops_per_second.get(p, 0.0)) for p, rate in rates.items()}
    taken = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    choice = PrecisionChoice(device_name(device), torch.__version__, rates, choose(rates), size, taken)
    entries = read_cache()
    entries[machine_key(device)] = asdict(choice)
    write_cache(entries)
    return choice


# Machines whose measurement this process has taken again, after a run outpaced it.
_REMEASURED: set[str] = set()


def peak_outpaced(device: torch.device, precision: str, achieved: float) -> float:
    """The peak for ``precision`` on ``device`` once a run trained at ``achieved`` FLOP/s, above the one it had.

    A measured peak below what training reached was taken while the machine was busy (a measurement
    of 54 GFLOP/s, cached while packages installed, gave an MFU of 200% against 184 measured idle):
    measure again, once per process (``precision_choice`` keeps each precision's higher rate). The
    peak returned is never below ``achieved``, so an MFU stays at most 1.
    """
    key = machine_key(device)
    if device.type != "cuda" and key not in _REMEASURED:
        _REMEASURED.add(key)
        precision_choice(device, remeasure=True)
    return max(peak_flops(device, precision), achieved)


def peak_flops(device: torch.device, precision: str) -> float:
    """Peak FLOP/s of ``precision`` on ``device``: the datasheet's on known GPUs, else measured (``peak_precision``'s)."""
    listed = _datasheet_peak(device, precision)
    return listed if listed is not None else precision_choice(device).flops_per_second[peak_precision(device, precision)]


def peak_precision(device: torch.device, precision: str) -> str:
    """The precision whose peak ``peak_flops`` gives for ``precision``: itself, or fp32 where none of its own is known (fp16 on a CPU)."""
    if _datasheet_peak(device, precision) is not None or precision_choice(device).flops_per_second.get(precision):
        return precision
    return "fp32"


def _datasheet_peak(device: torch.device, precision: str) -> float | None:
    """The datasheet's peak of ``precision`` on a known GPU; else None."""
    if device.type == "cuda":
        name = device_name(device)
        for fragment, peaks in DATASHEET_PEAKS.items():
            if fragment in name and precision in peaks:
                return peaks[precision]
    return None
