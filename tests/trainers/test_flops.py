import itertools
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hpsearch.models import DataSpec, build_model, get_model, list_models
from hpsearch.trainers.calls import signature
from hpsearch.trainers.flops import FlopsMeter
from hpsearch.trainers.flops_stats import FlopsStats

TOKENS = DataSpec(kind="tokens", seq_len=32, num_outputs=4, vocab_size=32)
USER_ATTRS = {
    "flops.total", "flops.avg_per_pass", "flops.forward_passes", "flops.avg_time_per_pass_s", "flops.per_second",
    "flops.std", "flops.min", "flops.max", "flops.per_sample_forward", "params.count",
    "flops.train_step_total", "flops.train_per_second",
}


def sample_input(data: DataSpec, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if data.vocab_size is not None:
        return torch.randint(0, data.vocab_size, (batch, data.seq_len), generator=g)
    return torch.randn(batch, data.seq_len, data.num_features, generator=g)


def reference_flops(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """FlopCounterMode's (forward, backward) counts: one forward, then the backward a training
    step runs (to the trainable parameters, and to ``x`` if it requires grad). SDPA runs on the math backend, whose
    matmuls FlopCounterMode can see on CPU (it has no formula for the fused CPU kernel)."""
    model.eval()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = model(x)
        forward = counter.get_total_flops()
        if out.requires_grad:
            out.backward(torch.ones_like(out))
    return forward, counter.get_total_flops() - forward


# --- elementwise work, by hand ------------------------------------------------------------------

# Ops each kernel applies to the [seq_len, grid_size] distance matrix, one FLOP per element each:
#   rbf:     d / σ, (< cutoff), square, × -½, exp, where
#   compact: d / r, 1 - ·, relu (the max(0, ·))
#   fourier: ω · d, cos
# plus one scalar exp turning the learned log-width into σ, r or ω.
KERNEL_OPS = {"rbf": 6, "compact": 3, "fourier": 2}


def hand_count(kernel: str, evolution: str, batch: int, seq_len: int, grid: int, dim: int, steps: int, layers: int) -> int:
    kernel_flops = KERNEL_OPS[kernel] * seq_len * grid + 1  # once per pass: it doesn't depend on the batch
    if evolution == "pde":
        # left + right, 2 · centre, minus it, α · laplacian, field + that: 5 per field element;
        # α = ½ · sigmoid(logit): 2 scalar ops.
        step_flops = 5 * batch * dim * grid + 2
    else:
        step_flops = 0  # the conv is dense work; its GELU and residual are not field elementwise work
    return layers * (kernel_flops + steps * step_flops)


# --- agreement with FlopCounterMode -----------------------------------------------------------

# Every model at its defaults, plus the TFN's other evolution and kernels (each kernel and
# evolution's elementwise work is also checked on its own further down).
ZOO = [(spec.name, {}) for spec in list_models()] + [
    ("tfn_classifier", {"kernel_type": "compact", "evolution_type": "pde"}),
    ("tfn_classifier", {"kernel_type": "fourier", "evolution_type": "pde"}),
    ("tfn_regressor", {"kernel_type": "compact", "evolution_type": "pde", "time_steps": 3}),
    ("transformer_classifier", {"num_heads": 2, "num_layers": 1, "ff_mult": 4}),
]


ZOO_DATA = {  # small, so the whole zoo (the unrolled LSTM included) traces in seconds
    "tokens": DataSpec("tokens", seq_len=16, num_outputs=4, vocab_size=32),
    "token_sequence": DataSpec("token_sequence", seq_len=12, num_outputs=10, vocab_size=12, output_len=4),
    "series": DataSpec("series", seq_len=24, num_outputs=3, num_features=5),
}


def zoo_data(name: str) -> DataSpec:
    return ZOO_DATA[get_model(name).input_kind]  # a KeyError here: a new input kind to add above


@pytest.mark.parametrize(("name", "hparams"), ZOO, ids=[f"{n}-{'-'.join(map(str, h.values())) or 'defaults'}" for n, h in ZOO])
def test_forward_flops_agree_with_flop_counter_mode(name, hparams):
    data, batch = zoo_data(name), 5
    model = build_model(name, hparams, data)
    x = sample_input(data, batch)
    parts = FlopsMeter(model).count_forward_parts(x)
    forward, backward = reference_flops(model, x)
    assert forward > 0 and backward > 0
    # FlopCounterMode counts no elementwise work; everything else must agree, backward included.
    assert parts.total == parts.dense + parts.elementwise
    assert abs(parts.dense - forward) <= 0.01 * forward, (parts, forward)
    assert abs(parts.dense_backward - backward) <= 0.01 * backward, (parts, backward)
    # The elementwise work the meter adds on top: the TFN's field work, by hand; none elsewhere.
    p = get_model(name).resolve(hparams)
    expected = 0
    if "kernel_type" in p:
        expected = hand_count(p["kernel_type"], p["evolution_type"], batch, data.seq_len, p["grid_size"],
                              p["embed_dim"], p["time_steps"], p["num_layers"])
        assert expected > 0
    assert parts.elementwise == expected


def test_attention_counts_both_products_with_unequal_lengths():
    class CrossAttention(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = x[:, :, :7, :]  # 7 queries over 11 keys, head 6, values 5 wide
            k = x[:, :, :, :6].contiguous()
            v = x[:, :, :, :5].contiguous()
            return F.scaled_dot_product_attention(q, k, v)

    x = torch.randn(2, 3, 11, 6)
    model = CrossAttention()
    counted = FlopsMeter(model).count_forward(x)
    assert counted == 2 * 2 * 3 * 7 * 11 * (6 + 5) == reference_flops(model, x)[0]
    x.requires_grad_(True)  # gradients for q, k and v: 4 products, as the math backend runs them
    assert FlopsMeter(model).count_forward_parts(x).dense_backward == 2 * counted == reference_flops(model, x)[1]

    class QueryOnly(nn.Module):  # keys and values fixed: only q and the scores need gradients
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("memory", torch.randn(2, 3, 11, 6))

        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, self.memory, self.memory[..., :5])

    q = torch.randn(2, 3, 7, 6, requires_grad=True)
    parts = FlopsMeter(QueryOnly()).count_forward_parts(q)
    assert parts.dense_backward == parts.dense == reference_flops(QueryOnly(), q)[1]


class RecurrentClassifier(nn.Module):
    """A user's model on torch's own recurrent layers: embeddings or raw features, padded or packed."""

    def __init__(self, rnn: nn.RNNBase, embed: bool, packed: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, rnn.input_size) if embed else None
        self.rnn, self.packed = rnn, packed
        width = (rnn.proj_size or rnn.hidden_size) * (2 if rnn.bidirectional else 1)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) if self.embed is not None else x
        if self.packed:  # sequences of lengths 7, 5, 3 and 2
            x = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([7, 5, 3, 2]), batch_first=True)
        out, _ = self.rnn(x)
        if self.packed:
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        return self.head(out[:, -1] if self.rnn.batch_first else out[-1])


@pytest.mark.parametrize(("rnn", "embed", "packed"), [
    (nn.GRU(8, 16, batch_first=True), True, False),
    (nn.GRU(8, 16, num_layers=2, bidirectional=True, batch_first=True), True, True),
    (nn.LSTM(8, 16, proj_size=4), False, False),
    (nn.LSTM(8, 16, num_layers=2, batch_first=True), True, True),
    (nn.RNN(8, 16, num_layers=3, nonlinearity="relu", batch_first=True), False, False),
], ids=["gru", "gru-2-bidirectional-packed", "lstm-proj-time-first", "lstm-2-packed", "rnn-relu-3"])
def test_torch_recurrent_layers_agree_with_flop_counter_mode(rnn, embed, packed):
    # A traced nn.GRU is one aten::gru node: fvcore alone counted only the head around it.
    torch.manual_seed(0)
    model = RecurrentClassifier(rnn, embed, packed)
    shape = (4, 7) if rnn.batch_first else (7, 4)
    x = torch.randint(0, 20, shape) if embed else torch.randn(*shape, 8)
    parts = FlopsMeter(model).count_forward_parts(x)
    forward, backward = reference_flops(model, x)
    head = 2 * 4 * model.head.in_features * 3
    assert parts.dense > 10 * head
    assert parts.dense == forward
    # Exact but for the packed, backward direction's few first steps with no gradient to the state.
    assert abs(parts.dense_backward - backward) <= (0.01 * backward if packed and rnn.bidirectional else 0)


def test_convolution_with_same_padding_is_counted():
    model = nn.Conv1d(4, 6, kernel_size=3, padding="same")  # traces as aten::_convolution_mode
    x = torch.randn(2, 4, 10)
    parts = FlopsMeter(model).count_forward_parts(x)
    assert (parts.dense, parts.dense_backward) == (2 * 2 * 6 * 4 * 3 * 10,) * 2 == reference_flops(model, x)


# --- elementwise work: each kernel and evolution, away from the defaults ----------------------


@pytest.mark.parametrize(("kernel", "evolution"), itertools.product(("rbf", "compact", "fourier"), ("pde", "cnn")))
def test_tfn_elementwise_flops_match_hand_count(kernel, evolution):
    seq_len, grid, dim, steps, layers, batch = 20, 24, 16, 3, 2, 3
    hparams = dict(kernel_type=kernel, evolution_type=evolution, grid_size=grid, embed_dim=dim, time_steps=steps, num_layers=layers)
    data = DataSpec(kind="tokens", seq_len=seq_len, num_outputs=4, vocab_size=32)
    model = build_model("tfn_classifier", hparams, data)
    parts = FlopsMeter(model).count_forward_parts(sample_input(data, batch))
    assert parts.elementwise == hand_count(kernel, evolution, batch, seq_len, grid, dim, steps, layers)


def test_elementwise_counts_only_inside_the_chosen_modules():
    class Field(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.exp(-x.abs()).clamp(max=0.5)  # abs, neg, exp, clamp

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.field = Field()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.exp(self.field(x) * 2.0)  # outside the field: not counted

    x = torch.randn(4, 10)
    assert FlopsMeter(Model(), elementwise_modules=(Field,)).count_forward_parts(x).elementwise == 4 * 40
    assert FlopsMeter(Model(), elementwise_modules=()).count_forward(x) == 0


# --- caching and statistics ---------------------------------------------------------------------


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16, bias=False), nn.ReLU(), nn.Linear(16, 4, bias=False))


def fwd(batch: int) -> int:
    return 2 * batch * (8 * 16 + 16 * 4)


def test_each_shape_is_traced_once():
    meter = FlopsMeter(mlp())
    meter.observe(torch.randn(64, 8), 0.01, training=True)
    meter.observe(torch.randn(64, 8), 0.01, training=True)
    meter.observe(torch.randn(64, 8), 0.01, training=False)
    assert meter.traces == 1
    assert meter.count_forward(torch.randn(64, 8)) == fwd(64) and meter.traces == 1
    meter.observe(torch.randn(16, 8), 0.01, training=True)  # the last, smaller batch
    assert meter.traces == 2
    stats = meter.stats()
    assert stats.forward_passes == 4 and stats.training_passes == 3
    assert (stats.min, stats.max) == (fwd(16), fwd(64))
    assert stats.total == 3 * fwd(64) + fwd(16)


def test_meters_that_share_counts_trace_each_shape_once_between_them():
    counts = {}
    first, second = FlopsMeter(mlp(), counts=counts), FlopsMeter(mlp(), counts=counts)
    first.observe(torch.randn(64, 8), 0.01, training=True)
    second.observe(torch.randn(64, 8), 0.01, training=True)
    second.observe(torch.randn(16, 8), 0.01, training=False)
    assert (first.traces, second.traces) == (1, 1)  # the second traced only the shape the first had not seen
    assert second.stats().total == fwd(64) + fwd(16) and first.stats().total == fwd(64)
    assert FlopsMeter(mlp()).count_forward_parts(torch.randn(64, 8)) == counts[signature(torch.randn(64, 8))]


def test_stats_arithmetic_on_known_observations():
    meter = FlopsMeter(mlp())
    for _ in range(3):
        meter.observe(torch.randn(4, 8), 0.1, training=True)
    meter.observe(torch.randn(2, 8), 0.2, training=False)
    s = meter.stats()
    per_pass = [fwd(4)] * 3 + [fwd(2)]
    mean = sum(per_pass) / 4
    assert s.total == sum(per_pass) == 3 * 1536 + 768
    assert s.forward_passes == 4
    assert s.avg_per_pass == pytest.approx(mean)
    assert s.std == pytest.approx(math.sqrt(sum((f - mean) ** 2 for f in per_pass) / 4))
    assert (s.min, s.max) == (768, 1536)
    assert s.avg_time_per_pass_s == pytest.approx(0.5 / 4)
    assert s.per_second == pytest.approx(sum(per_pass) / 0.5)
    assert s.per_sample_forward == pytest.approx(sum(per_pass) / 14)
    assert s.params_count == 8 * 16 + 16 * 4
    # Backward: weight grads of both layers (= forward) and the input grad of the second layer
    # only (the first layer's input needs none): not the 3x rule.
    backward = 2 * 4 * (8 * 16 + 16 * 4) + 2 * 4 * 16 * 4
    assert s.train_step_total == 3 * (fwd(4) + backward)


def test_backward_skips_frozen_weights_and_scales_elementwise_work():
    model = mlp()
    model[2].weight.requires_grad_(False)  # no weight grad there; the input grad still flows
    parts = FlopsMeter(model).count_forward_parts(torch.randn(4, 8))
    assert parts.dense_backward == 2 * 4 * 8 * 16 + 2 * 4 * 16 * 4 == reference_flops(model, torch.randn(4, 8))[1]
    model[0].weight.requires_grad_(False)  # nothing left to train
    assert FlopsMeter(model).count_forward_parts(torch.randn(4, 8)).backward == 0
    # The elementwise part's backward: at the dense part's backward / forward ratio.
    data = DataSpec(kind="tokens", seq_len=16, num_outputs=4, vocab_size=32)
    tfn = build_model("tfn_classifier", {"evolution_type": "pde", "embed_dim": 8, "grid_size": 8}, data)
    parts = FlopsMeter(tfn).count_forward_parts(sample_input(data, 2))
    assert parts.backward == parts.dense_backward + round(parts.elementwise * parts.dense_backward / parts.dense)


def test_training_flop_rate_spans_consecutive_training_steps():
    ticks = iter([0.0, 0.0, 1.0, 1.0, 3.0, 3.0, 10.0, 20.0, 20.0])  # two clock reads per training observe
    meter = FlopsMeter(mlp(), clock=lambda: next(ticks))
    x = torch.randn(4, 8)
    meter.observe(x, 0.1, training=True)  # t=0
    meter.observe(x, 0.1, training=True)  # t=1: one step of 1 s
    meter.observe(x, 0.1, training=True)  # t=3: one step of 2 s
    meter.observe(x, 0.1, training=False)  # t=10: validation breaks the chain
    meter.observe(x, 0.1, training=True)  # t=20: no step counted
    s = meter.stats()
    step = s.train_step_total / 4
    assert s.train_per_second == pytest.approx(2 * step / 3.0)


def test_user_attrs_have_exactly_the_documented_keys():
    meter = FlopsMeter(mlp())
    assert set(meter.stats().as_user_attrs()) == USER_ATTRS  # no passes yet: zeros, no division by zero
    meter.observe(torch.randn(4, 8), 0.1, training=True)
    attrs = meter.stats().as_user_attrs()
    assert set(attrs) == USER_ATTRS
    assert all(type(v) in (int, float) and math.isfinite(v) for v in attrs.values())
    assert json.loads(json.dumps(attrs)) == attrs
    assert attrs["params.count"] == 8 * 16 + 16 * 4
    # MFU needs the device's peak, which the trainer gives the meter, and two timed steps.
    meter.peak_flops = 1e12
    meter.observe(torch.randn(4, 8), 0.1, training=True)
    attrs = meter.stats().as_user_attrs()
    assert set(attrs) == USER_ATTRS | {"flops.mfu"} and 0 < attrs["flops.mfu"] < 1


def test_format_block():
    meter = FlopsMeter(mlp())
    meter.observe(torch.randn(4, 8), 0.001, training=True)
    block = meter.stats().format_block()
    assert "FLOPS STATISTICS" in block
    for text in ("Forward passes:", "1 (1 training, 0 validation)", "1.536 kFLOPs", "Parameters:", "192"):
        assert text in block
    assert isinstance(meter.stats(), FlopsStats)


# --- counting leaves the run alone ---------------------------------------------------------------


def test_counting_restores_modes_and_rng():
    model = build_model("tfn_classifier", {}, TOKENS)
    model.train()
    model.head[2].eval()  # one submodule in its own mode
    meter = FlopsMeter(model)
    torch.manual_seed(1)
    meter.observe(sample_input(TOKENS, 4), 0.01, training=True)
    after = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(3))
    assert model.training and model.layers[0].dropout.training and not model.head[2].training


def test_counting_leaves_batch_norm_statistics_alone():
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)).train()
    before = model[1].running_mean.clone(), int(model[1].num_batches_tracked)
    FlopsMeter(model).observe(torch.randn(16, 8) + 3.0, 0.01, training=True)
    assert torch.equal(model[1].running_mean, before[0]) and int(model[1].num_batches_tracked) == before[1]
    assert model.training


def test_seeded_trial_is_the_same_with_and_without_a_meter():
    from hpsearch.trainers.config import TrainConfig
    from hpsearch.trainers.tasks import build_task
    from hpsearch.trainers.trainer import Trainer

    task = build_task("synthetic_tokens", {"dataset_size": 150})
    config = TrainConfig(epochs=1, batch_size=32)

    def run(meter: bool):
        torch.manual_seed(0)
        model = build_model("tfn_classifier", {"embed_dim": 16, "grid_size": 16}, task.data)
        flops = FlopsMeter(model) if meter else None
        return Trainer(model, task, config, flops_meter=flops).fit(), flops

    (plain, _), (metered, meter) = run(False), run(True)
    timings = {"epoch_seconds": 0, "samples_per_second": 0, "peak_memory_bytes": 0, "mfu": 0}
    assert [r.as_row() | timings for r in plain.records] == [r.as_row() | timings for r in metered.records]
    stats = meter.stats()
    # 120 training examples in batches of 32 (3 full + 24), 30 validation (one batch of 30).
    assert stats.forward_passes == 5 and stats.training_passes == 4
    assert meter.traces == 3


def test_the_block_names_the_precision_whose_peak_mfu_divides_by():
    meter = FlopsMeter(mlp())
    meter.peak_flops, meter.precision = 1e12, "bf16"
    for _ in range(2):
        meter.observe(torch.randn(4, 8), 0.001, training=True)
    block = meter.stats().format_block()
    assert re.search(r"MFU \(of peak FLOP/s\): +\d+\.\d\d% of the bf16 peak", block), block
    assert "field elementwise" not in block  # an MLP does none: the row would only say 0
