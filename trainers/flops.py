"""FLOPs meter: counts the FLOPs of every forward pass the trainer makes, once per input shape.

Convention (DESIGN.md): 2 FLOPs per multiply-add, as ``torch.utils.flop_counter.FlopCounterMode``
counts. A pass's forward FLOPs are the sum of two parts:

* **dense**: the matrix products (``linear``, ``addmm``, ``mm``, ``bmm``, ``baddbmm``, ``matmul``,
  ``einsum``, convolutions, ``scaled_dot_product_attention`` and the weight matrices of torch's
  ``nn.RNN``, ``nn.GRU`` and ``nn.LSTM``), counted on fvcore's jit trace by this module's
  handles (output elements x contracted length; fvcore's own multiply-add counts for
  convolutions and einsum), doubled; SDPA, recurrent layers and ``padding="same"``
  convolutions, which fvcore skips, included.
  Everything else outside the field modules below (normalisation layers, activations, softmax,
  residual adds) counts zero, exactly as FlopCounterMode counts it, so this part stays
  comparable with FlopCounterMode.
* **elementwise**: the arithmetic of the Token Field Network that has no matrix product in it:
  the field kernel's evaluation (``FieldKernel``) and the explicit diffusion steps
  (``DiffusionStep``). There it is the work itself (a PDE evolution has no matmul at all), so it
  counts: 1 FLOP per output element of every elementwise op (``add``, ``sub``, ``rsub``, ``mul``,
  ``div``, ``neg``, ``pow``, ``exp``, ``cos``, ``sin``, ``abs``, ``sigmoid``, ``tanh``, ``sqrt``,
  ``relu``, ``clamp``, ``maximum``, ``minimum``, comparisons and ``where``), transcendental or not,
  a scalar op being 1. Copies, padding and slicing count zero. These ops count only inside those
  modules; the same ops elsewhere count zero, like the normalisation layers.

The training step's FLOPs (forward + backward) come from the same trace, taken with autograd
on, so every traced value records whether it requires grad: a matrix product's backward costs
its forward once for each operand that needs a gradient (``linear``'s input and weight, both
sides of a ``matmul``, the convolution's input and weight; SDPA as its math backend
differentiates it, without the score recompute of fused kernels), which is what autograd runs
and FlopCounterMode counts (a test holds the two within 1%). The elementwise part's backward is
scaled by the same backward / forward ratio as the dense part; FlopCounterMode has no view of it.
So the training step costs no extra run: no 3x rule and no second pass per shape.

The achieved training FLOP/s divides the FLOPs of consecutive training steps by the wall time
between their ``observe`` calls (backward, optimiser and the next forward), so it needs no hook
in the trainer beyond ``observe``.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from typing import Counter as CounterT

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hpsearch.models.tfn import DiffusionStep, FieldKernel
from hpsearch.trainers.calls import Call, PositionalAdapter, signature, tensors_of
from hpsearch.trainers.flops_stats import FlopsStats
from hpsearch.trainers.step import call_model

#: Modules whose elementwise arithmetic the meter counts (see the module docstring).
ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (FieldKernel, DiffusionStep)

_ELEMENTWISE_OPS = (
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "pow", "exp", "cos", "sin",
    "abs", "sigmoid", "tanh", "sqrt", "rsqrt", "relu", "relu_", "clamp", "clamp_", "clamp_min", "maximum",
    "minimum", "lt", "le", "gt", "ge", "where",
)
# FlopCounterMode counts none of these; without an explicit "ignore" fvcore would list them as
# unsupported, and its default layer_norm handle would count 5 per element.
# torch's nn.RNN, nn.GRU and nn.LSTM, padded or packed: one traced node per whole stack of layers.
_RECURRENT_OPS = ("rnn_tanh", "rnn_relu", "gru", "lstm")
_IGNORED_OPS = ("layer_norm", "group_norm", "batch_norm", "instance_norm", "softmax", "gelu", "embedding", "mean")

Key = tuple[tuple[int, ...], torch.dtype]


# fvcore is imported by the first count (``FlopsMeter._trace``), not with this module: a search
# imports the meter before its first trial starts, and fvcore would only delay that.


def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(value)
    if shape is None:
        raise ValueError("fvcore's trace lacks a tensor shape the FLOPs meter needs")
    return list(shape)


def _needs_grad(value: Any) -> bool:
    return bool(value.isCompleteTensor() and value.type().requires_grad())


def _counts(macs: int, operands_with_grad: int) -> CounterT[str]:
    """Forward and backward FLOPs of a product of ``macs`` multiply-adds (2 FLOPs each)."""
    return CounterT({"dense": 2 * macs, "dense_backward": 2 * macs * operands_with_grad})


def _product(a: int, b: int, handle: Callable[[list[Any], list[Any]], Any] | None = None) -> Callable[..., CounterT[str]]:
    """A matrix product of ``inputs[a]`` and ``inputs[b]``: output elements x contracted length.

    With ``handle`` (an fvcore handle, 1 per multiply-add), that handle gives the multiply-adds.
    """

    def count(inputs: list[Any], outputs: list[Any]) -> CounterT[str]:
        if handle is None:
            macs = math.prod(_shape(outputs[0])) * _shape(inputs[a])[-1]
        else:
            result = handle(inputs, outputs)
            macs = int(sum(result.values()) if isinstance(result, dict) else result)
        return _counts(macs, _needs_grad(inputs[a]) + _needs_grad(inputs[b]))

    return count


def _conv_mode_macs(inputs: list[Any], outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import conv_flop_count

    return int(conv_flop_count(_shape(inputs[0]), _shape(inputs[1]), _shape(outputs[0])))


def _einsum(inputs: list[Any], outputs: list[Any]) -> CounterT[str]:
    from fvcore.nn.jit_handles import einsum_flop_jit

    operands = list(inputs[1].node().inputs())
    return _counts(int(einsum_flop_jit(inputs, outputs)), sum(map(_needs_grad, operands)))


def _sdpa(inputs: list[Any], outputs: list[Any]) -> CounterT[str]:
    """``softmax(q kᵀ) v``: the two products, as FlopCounterMode's SDPA formula counts them."""
    (q, k, v), out = (_shape(x) for x in inputs[:3]), _shape(outputs[0])
    scores = math.prod(out[:-2]) * q[-2] * k[-2] * q[-1]  # q kᵀ
    mixing = math.prod(out[:-2]) * q[-2] * k[-2] * v[-1]  # p v
    grad_q, grad_k, grad_v = (_needs_grad(x) for x in inputs[:3])
    grads = scores * (grad_q + grad_k) + mixing * ((grad_q or grad_k) + grad_v)
    return CounterT({"dense": 2 * (scores + mixing), "dense_backward": 2 * grads})


def _recurrent(inputs: list[Any], outputs: list[Any]) -> CounterT[str]:
    """A stack of recurrent layers: every weight matrix (input, hidden and LSTM projection) once per token.

    The node's ``params`` list holds each layer's and direction's weight matrices in order, the
    first layer's input weights first; ``num_layers`` and ``bidirectional`` follow it at fixed
    offsets in every variant (padded ``input`` or packed ``data``).
    """
    index = next(i for i, value in enumerate(inputs)
                 if str(value.type()).startswith("List") and any(len(_shape(e)) == 2 for e in value.node().inputs()
                                                                 if e.isCompleteTensor()))
    weights = [e for e in inputs[index].node().inputs() if len(_shape(e)) == 2]
    layers, bidirectional = inputs[index + 2].toIValue(), inputs[index + 5].toIValue()
    data = _shape(inputs[0])
    tokens = math.prod(data[:-1])  # [seq, batch, features], batch first, unbatched or packed alike
    per_direction = len(weights) // (layers * (2 if bidirectional else 1))
    first_layer_input = set(range(0, per_direction * (2 if bidirectional else 1), per_direction))
    packed = index == 3  # (data, batch_sizes, hx, params, ...) rather than (input, hx, params, ...)
    initial = inputs[index - 1]  # the initial hidden state: h0, or LSTM's (h0, c0)
    batch = _shape(next(initial.node().inputs()) if str(initial.type()).startswith("List") else initial)[1]
    forward = backward = 0
    for position, weight in enumerate(weights):
        size = math.prod(_shape(weight))
        forward += 2 * tokens * size
        grads = tokens * _needs_grad(weight)
        if position in first_layer_input:
            grads += tokens * _needs_grad(inputs[0])
        elif _needs_grad(weight):
            # Later layers' inputs and the hidden state carry gradients as the weights do, but not
            # the initial state (zeros), which a hidden weight multiplies at each sequence's first
            # step. A packed sequence read backwards starts where the longer ones have run a while,
            # and torch joins its initial state to theirs: there only the longest start without one.
            reverse = bidirectional and (position // per_direction) % 2 == 1
            grads += tokens - (batch if position % per_direction == 1 and not (packed and reverse) else 0)
        backward += 2 * grads * size
    return CounterT({"dense": forward, "dense_backward": backward})


def _elementwise(inputs: list[Any], outputs: list[Any]) -> CounterT[str]:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(outputs[0])  # None for arithmetic on Python numbers (sizes), which is free
    return CounterT({"elementwise": math.prod(shape) if shape is not None else 0})


def _op_handles() -> dict[str, Any]:
    from fvcore.nn.jit_handles import conv_flop_jit

    handles: dict[str, Any] = {
        "aten::linear": _product(0, 1),
        "aten::matmul": _product(0, 1),
        "aten::mm": _product(0, 1),
        "aten::bmm": _product(0, 1),
        "aten::addmm": _product(1, 2),
        "aten::baddbmm": _product(1, 2),
        "aten::_convolution": _product(0, 1, conv_flop_jit),
        # padding="same" / "valid" traces as _convolution_mode, which fvcore has no handle for.
        "aten::_convolution_mode": _product(0, 1, _conv_mode_macs),
        "aten::einsum": _einsum,
        "aten::scaled_dot_product_attention": _sdpa,
    }
    handles.update({f"aten::{op}": _recurrent for op in _RECURRENT_OPS})
    handles.update({f"aten::{op}": _elementwise for op in _ELEMENTWISE_OPS})
    handles.update({f"aten::{op}": None for op in _IGNORED_OPS})
    return handles


@dataclass(frozen=True)
class ForwardCount:
    """FLOPs of one pass on one input: forward ``dense`` (matrix products) + ``elementwise``, and
    ``dense_backward``, the backward of the matrix products in a training step."""

    dense: int
    elementwise: int
    dense_backward: int = 0

    @property
    def total(self) -> int:
        """Forward FLOPs."""
        return self.dense + self.elementwise

    @property
    def backward(self) -> int:
        """Backward FLOPs of a training step: the elementwise part at the dense part's ratio."""
        ratio = self.dense_backward / self.dense if self.dense else 2.0  # no products: the usual 2x
        return self.dense_backward + round(self.elementwise * ratio)


@dataclass
class _Entry:
    """Everything the meter keeps per (shape, dtype, training): counted once, then only ``passes`` grows."""

    forward: int
    backward: int
    batch: int
    passes: int = 0


class FlopsMeter:
    """Watches a model's forward passes and reports their FLOPs (see the module docstring).

    ``attach`` hooks the meter on the model, so every forward pass is observed wherever it is
    made (a custom training step included); a pass with autograd on counts as training.
    ``counts`` holds the counts per input signature; meters of models with the same structure
    may share one (a search shares it between trials of the same model and hyperparameters),
    so that each structure is traced once per input signature, not once a trial.
    ``elementwise_modules`` names the module types whose elementwise arithmetic counts; ``clock``
    is the timer for training-step intervals (tests replace it).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        counts: dict[Any, ForwardCount] | None = None,
        elementwise_modules: tuple[type[nn.Module], ...] = ELEMENTWISE_MODULES,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.model = model
        self.elementwise_modules = elementwise_modules
        self.traces = 0  # traces this meter ran: one per input signature not yet in its counts
        self._clock = clock
        self._forward: dict[Any, ForwardCount] = {} if counts is None else counts
        self._entries: dict[tuple[Any, bool], _Entry] = {}
        self._forward_seconds = 0.0
        # Training-step throughput: from the end of one training observe() to the start of the
        # next lies the rest of that step (loss, backward, optimiser) and the next step's forward.
        self._last_train: tuple[float, _Entry] | None = None
        self._step_seconds = 0.0
        self._step_flops = 0
        self._counting = False
        self._started: list[float] = []
        self._hooks: list[Any] = []
        #: Peak FLOP/s of the device in the run's precision (``trainers.precision.peak_flops``), for MFU.
        self.peak_flops: float | None = None
        #: The precision that peak is of (fp32, bf16 or fp16), named beside MFU in the block.
        self.precision: str = ""

    def train_progress(self) -> tuple[int, float]:
        """Training-step FLOPs and seconds measured so far (see ``observe``), for per-epoch rates."""
        return self._step_flops, self._step_seconds

    def attach(self, model: nn.Module | None = None) -> None:
        """Observe every forward pass of ``model`` (the meter's own by default) from now on."""
        model = model if model is not None else self.model
        self.detach()
        self._hooks = [
            model.register_forward_pre_hook(self._before_forward),
            model.register_forward_hook(self._after_forward, with_kwargs=True),
        ]

    def detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _before_forward(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self._counting:
            self._started.append(time.perf_counter())

    def _after_forward(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if self._counting or not self._started:
            return
        seconds = time.perf_counter() - self._started.pop()
        inputs: Any = (args[0] if len(args) == 1 else args) if not kwargs else Call(args, kwargs)
        self.observe(inputs, seconds, training=torch.is_grad_enabled())

    def observe(self, inputs: Any, seconds: float, training: bool) -> None:
        """Record one forward pass on ``inputs`` that took ``seconds``; counts only unseen signatures.

        ``inputs`` is the model's argument: a tensor, a tuple of positional arguments, or a ``Call``.
        """
        now = self._clock()
        key = (signature(inputs), training)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._new_entry(inputs, training)
        entry.passes += 1
        self._forward_seconds += seconds
        if not training:
            self._last_train = None  # validation between two training passes: no step interval
            return
        if self._last_train is not None:
            last_end, last = self._last_train
            self._step_seconds += now - last_end
            self._step_flops += last.backward + entry.forward
        # Taken after any counting above, so the meter's own work stays out of the interval.
        self._last_train = (self._clock(), entry)

    def count_forward(self, inputs: Any) -> int:
        """FLOPs of one forward pass on ``inputs`` (cached per signature)."""
        return self.count_forward_parts(inputs).total

    def count_forward_parts(self, inputs: Any) -> ForwardCount:
        """Dense, elementwise and backward FLOPs of a pass on ``inputs`` (cached per signature)."""
        key = signature(inputs)
        count = self._forward.get(key)
        if count is None:
            # Autograd on, so the trace records which values need gradients (see _product).
            self._counting = True
            try:
                with _counting_mode(self.model, tensors_of(inputs)), torch.enable_grad():
                    count = self._forward[key] = self._count(inputs)
            finally:
                self._counting = False
        return count

    def stats(self) -> FlopsStats:
        """Totals and spread over every pass observed so far (zeros before the first)."""
        entries = [e for e in self._entries.values() if e.passes]
        passes = sum(e.passes for e in entries)
        total = sum(e.forward * e.passes for e in entries)
        mean = total / passes if passes else 0.0
        variance = sum(e.passes * (e.forward - mean) ** 2 for e in entries) / passes if passes else 0.0
        samples = sum(e.batch * e.passes for e in entries)
        elementwise = sum(self._forward[k[0]].elementwise * e.passes for k, e in self._entries.items())
        return FlopsStats(
            total=total,
            avg_per_pass=mean,
            forward_passes=passes,
            training_passes=sum(e.passes for k, e in self._entries.items() if k[1]),
            avg_time_per_pass_s=self._forward_seconds / passes if passes else 0.0,
            per_second=total / self._forward_seconds if self._forward_seconds > 0 else 0.0,
            std=math.sqrt(variance),
            min=min((e.forward for e in entries), default=0),
            max=max((e.forward for e in entries), default=0),
            per_sample_forward=total / samples if samples else 0.0,
            elementwise_total=elementwise,
            params_count=sum(p.numel() for p in self.model.parameters()),
            train_step_total=sum((e.forward + e.backward) * e.passes for k, e in self._entries.items() if k[1]),
            train_per_second=self._step_flops / self._step_seconds if self._step_seconds > 0 else 0.0,
            mfu=self._step_flops / self._step_seconds / self.peak_flops if self._step_seconds > 0 and self.peak_flops else math.nan,
            precision=self.precision,
        )

    def _new_entry(self, inputs: Any, training: bool) -> _Entry:
        count = self.count_forward_parts(inputs)
        tensors = tensors_of(inputs)
        batch = int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 1
        return _Entry(forward=count.total, backward=count.backward if training else 0, batch=batch)

    def _count(self, inputs: Any) -> ForwardCount:
        """fvcore's trace (the model called directly, else through an adapter), else FlopCounterMode.

        The adapter takes the tensors positionally and returns the outputs' tensors as a tuple, which
        is what a jit trace needs of models called with several or keyword arguments, or returning
        dicts. Where no trace works, FlopCounterMode counts the matrix products of one forward pass,
        and the backward is taken as twice the forward.
        """
        self.traces += 1
        if isinstance(inputs, torch.Tensor):
            try:
                return self._trace(self.model, (inputs,), "")
            except Exception:  # noqa: BLE001  a model jit cannot trace: try the adapter, then the fallback
                pass
        call = inputs if isinstance(inputs, Call) else Call(tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,), {})
        adapter = PositionalAdapter(self.model, call)
        try:
            return self._trace(adapter, tuple(adapter.tensors), "model")
        except Exception:  # noqa: BLE001
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                call.run(self.model)
            forward = int(counter.get_total_flops())
            return ForwardCount(forward, 0, 2 * forward)

    def _trace(self, root: nn.Module, args: tuple[torch.Tensor, ...], prefix: str) -> ForwardCount:
        with warnings.catch_warnings():
            # Importing fvcore.nn scripts its loss functions with the deprecated torch.jit.script.
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.script")
            from fvcore.nn import FlopCountAnalysis
        analysis = (
            FlopCountAnalysis(root, args)
            .clear_op_handles()
            .set_op_handle(**_op_handles())
            .unsupported_ops_warnings(False)
            .uncalled_modules_warnings(False)
            .tracer_warnings("none")
        )
        counts = analysis.by_module_and_operator()
        scoped = [name for name, module in self.model.named_modules() if isinstance(module, self.elementwise_modules)]
        # A field module inside another already counts in its parent's total.
        outermost = [n for n in scoped if not any(p != n and (p == "" or n.startswith(p + ".")) for p in scoped)]
        qualified = [".".join(part for part in (prefix, n) if part) for n in outermost]
        elementwise = sum(counts[analysis.canonical_module_name(n)]["elementwise"] for n in qualified)
        root_counts = counts[""]
        return ForwardCount(int(root_counts["dense"]), int(elementwise), int(root_counts["dense_backward"]))


@contextmanager
def _counting_mode(model: nn.Module, tensors: list[torch.Tensor]) -> Iterator[None]:
    """Eval mode with the RNG state saved, so counting changes neither the model nor the run.

    Each module's own ``training`` flag comes back afterwards (not one flag for all), and so do
    the CPU generator and the inputs' CUDA generator: a seeded trial gives the same numbers with
    and without a meter.
    """
    devices = sorted({t.device for t in tensors if t.device.type == "cuda"}, key=str)
    modes = [(module, module.training) for module in model.modules()]
    with torch.random.fork_rng(devices=devices):
        model.eval()
        try:
            yield
        finally:
            for module, mode in modes:
                module.training = mode


def meta_forward_flops(model: nn.Module, sample: Any) -> int:
    """Matrix-product FLOPs of one forward pass, for a model and input on the meta device.

    Nothing is allocated or computed, so a budget can be checked before a model exists for
    real. fvcore's tracer cannot run on meta tensors, so this uses FlopCounterMode, which
    counts the same matrix products (the meter's extra elementwise field work is left out).
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        call_model(model, sample)
    return int(counter.get_total_flops())
