"""``meta_device``: build models on torch's meta device, with shapes and no values.

hpsearch builds a model on the meta device to check that a configuration can be built and to
count its parameters and FLOPs before anything trains. Weight initialisers have no values to
fill there, yet some of them cost a second: on a meta tensor, ``normal_`` (what ``nn.Embedding``
and most transformer inits call) runs a Python decomposition that imports ``torch._dynamo`` the
first time. ``hpsearch create`` and every search's start paid it; a process that trains imports
it later anyway, with its first ``torch.optim`` optimizer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# In-place fills with random values: on a meta tensor each leaves it as it was.
_RANDOM_FILLS = frozenset({"normal_", "uniform_", "bernoulli_", "exponential_", "geometric_", "log_normal_", "cauchy_", "random_"})


class _SkipRandomFills(TorchFunctionMode):
    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if getattr(func, "__name__", None) in _RANDOM_FILLS:
            target = args[0] if args else (kwargs or {}).get("tensor", (kwargs or {}).get("self"))
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def meta_device() -> Iterator[None]:
    """Within the block, new tensors and modules are on the meta device and their random initialisers are skipped."""
    with torch.device("meta"), _SkipRandomFills():
        yield
