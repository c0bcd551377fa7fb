"""Device and precision choice: what ``--device auto`` and ``--precision auto`` mean.

torch is imported by the functions that ask it something, not with the module:
``search.workers`` imports this module, and every ``hpsearch`` command that takes the worker
flags imports ``search.workers`` to build its parser; ``--help`` must not wait for torch.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, ContextManager

from hpsearch.trainers.config import DEVICES, PRECISIONS

if TYPE_CHECKING:
    import torch

_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def cuda_index(name: str) -> int | None:
    """N for a device named ``cuda:N``, else None."""
    match = _CUDA_INDEX.fullmatch(name.strip())
    return int(match.group(1)) if match else None


def visible_gpus() -> int:
    """How many CUDA devices this process sees (after ``CUDA_VISIBLE_DEVICES``); 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def physical_gpu(index: int, environ: Mapping[str, str] = os.environ) -> str:
    """What ``CUDA_VISIBLE_DEVICES`` names this process's ``cuda:index``: its entry there, else ``index``.

    Inside a process whose ``CUDA_VISIBLE_DEVICES`` is ``2,3`` (a scheduler's, say), ``cuda:1``
    is the machine's GPU 3: a child process meant for it must be given ``3``, not ``1``.
    """
    entries = [e.strip() for e in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if e.strip()]
    return entries[index] if index < len(entries) else str(index)


def device_label(device: torch.device) -> str:
    """The device as the machine names it, for the ``worker`` user attribute: ``cpu``, ``cuda:3``, ..."""
    import torch

    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{physical_gpu(index)}"


def resolve_device(requested: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; a named device (``cuda:N`` too) must be present."""
    import torch

    index = cuda_index(requested)
    if index is not None:
        count = visible_gpus()
        if count == 0:
            raise ValueError(f"--device {requested}: no CUDA device is available; use --device auto or cpu")
        if index >= count:
            raise ValueError(f"--device {requested}: this machine has {count} visible CUDA device(s), cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
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
        raise ValueError(f"unknown device {requested!r}; choose from {', '.join(DEVICES)} or cuda:N")
    return torch.device(requested)


def choose_precision(requested: str, device: torch.device) -> str:
    """The precision a run uses: ``auto`` is the fastest as measured on this device (``trainers.precision``).

    bf16 (fp16 with a gradient scaler on CUDA without bf16) only where its matmuls run at least
    1.15x faster than fp32's; fp32 on other devices. This is the machine's answer; a search then
    decides ``auto`` per model from the model's own steps (``trainers.step_speed``).
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
    import torch

    return torch.autocast(device_type=device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16, whose small range needs one."""
    import torch

    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
