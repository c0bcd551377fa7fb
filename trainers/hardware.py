"""Device and precision choice: what ``--device auto`` and ``--precision auto`` mean."""

from __future__ import annotations

import contextlib
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


def choose_precision(requested: str, device: torch.device) -> str:
    """The precision a run uses: ``auto`` is the fastest as measured on this device (``trainers.precision``).

    bf16 (fp16 with a gradient scaler on CUDA without bf16) only where its matmuls run at least
    1.15x faster than fp32's; fp32 on other devices.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose from {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if device.type not in ("cpu", "cuda"):
        return "fp32"
    from hpsearch.trainers.precision import precision_choice  # it imports this module

    return precision_choice(device).chosen


def autocast(precision: str, device: torch.device) -> ContextManager[object]:
    """The autocast context for ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16, whose small range needs one."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
