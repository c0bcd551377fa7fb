"""Device and precision choice: what ``--device auto`` and ``--precision auto`` mean."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import ContextManager

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(requested: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; a named device must be present."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available; use --device auto or cpu")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: no MPS device is available; use --device auto or cpu")
    if requested not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; choose from {', '.join(DEVICES)}")
    return torch.device(requested)


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def choose_precision(requested: str, device: torch.device, flags: frozenset[str] | None = None) -> str:
    """The precision a run uses: ``auto`` is bf16 where the hardware runs it fast.

    That is CUDA with bf16 support (Ampere or newer) and CPUs with AVX512-BF16 or AMX;
    older CUDA gets fp16 with a gradient scaler; anything else fp32.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose from {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        flags = cpu_flags() if flags is None else flags
        return "bf16" if {"avx512_bf16", "amx_bf16"} & flags else "fp32"
    return "fp32"


def autocast(precision: str, device: torch.device) -> ContextManager[object]:
    """The autocast context for ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16, whose small range needs one."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
