"""What test_zoo's generic checks cannot see: each newer model's own behaviour, and FLOPs tracing."""

from __future__ import annotations

import logging

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hpsearch.models import DataSpec, build_model, get_model, list_models
from hpsearch.models.recurrent import LSTMClassifier
from hpsearch.models.sequence import check_sequence_data
from tests.models.test_zoo import DATA_BY_KIND, _inputs

TOKENS = DATA_BY_KIND["tokens"]
SERIES = DATA_BY_KIND["series"]
SEQUENCE = DATA_BY_KIND["token_sequence"]
# fvcore's names for the operators that do a model's matmuls and convolutions.
_FVCORE_MATMULS = {"linear", "matmul", "bmm", "addmm", "einsum", "conv"}


@pytest.mark.parametrize("name", [spec.name for spec in list_models()])
def test_fvcore_traces_every_matmul_and_convolution(name: str) -> None:
    # The FLOPs meter traces with fvcore: an op fvcore can't read (nn.LSTM's aten::lstm, a
    # convolution with padding="same") would silently drop out of the count.
    model = build_model(name, {}, DATA_BY_KIND[get_model(name).input_kind]).eval()
    x = _inputs(name)
    logging.disable(logging.WARNING)  # fvcore warns about every elementwise op it skips
    try:
        analysis = FlopCountAnalysis(model, x)
        traced = 2 * sum(v for op, v in analysis.by_operator().items() if op in _FVCORE_MATMULS)
    finally:
        logging.disable(logging.NOTSET)
    with FlopCounterMode(display=False) as counter:
        model(x)
    expected = sum(v for op, v in counter.get_flop_counts()["Global"].items() if "attention" not in str(op))
    assert expected > 0
    assert traced == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_hand_written_lstm_matches_torch_lstm(bidirectional: bool) -> None:
    torch.manual_seed(0)
    model = LSTMClassifier(11, 3, embed_dim=5, hidden_size=6, num_layers=2, bidirectional=bidirectional, dropout=0.0)
    reference = nn.LSTM(5, 6, num_layers=2, bidirectional=bidirectional, batch_first=True)
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            directions = [("", layer.forward_lstm), ("_reverse", layer.backward_lstm)]
            for suffix, lstm in directions[: 1 + bidirectional]:
                getattr(reference, f"weight_ih_l{i}{suffix}").copy_(lstm.input_gates.weight)
                getattr(reference, f"bias_ih_l{i}{suffix}").copy_(lstm.input_gates.bias)
                getattr(reference, f"weight_hh_l{i}{suffix}").copy_(lstm.hidden_gates.weight)
                getattr(reference, f"bias_hh_l{i}{suffix}").zero_()
        tokens = torch.randint(0, 11, (4, 7))
        expected = model.head(reference(model.embedding(tokens))[0].mean(dim=1))
        assert torch.allclose(model.eval()(tokens), expected, atol=1e-5)


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4])
@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_cnn_keeps_the_length_for_any_kernel_and_pools_as_asked(kernel_size: int, pooling: str) -> None:
    model = build_model("cnn_classifier", {"kernel_size": kernel_size, "pooling": pooling}, TOKENS).eval()
    tokens = _inputs("cnn_classifier")
    with torch.no_grad():
        features = model.norm(model.blocks(model.embedding(tokens)))
        assert features.shape == (len(tokens), TOKENS.seq_len, 64)
        pooled = features.amax(dim=1) if pooling == "max" else features.mean(dim=1)
        assert torch.allclose(model(tokens), model.head(pooled))


def test_tfn_regressor_forecast_follows_the_level_of_the_series() -> None:
    # Inputs are taken relative to the last step, so a shifted series gets a shifted forecast:
    # a level the training part never reached cannot throw the model off.
    model = build_model("tfn_regressor", {}, SERIES).eval()
    series = _inputs("tfn_regressor")
    with torch.no_grad():
        assert torch.allclose(model(series + 7.0), model(series) + 7.0, atol=1e-4)
        assert not torch.allclose(model(series), model(series.flip(1)), atol=1e-4)


def test_tfn_regressor_rejects_windows_of_another_length() -> None:
    model = build_model("tfn_regressor", {}, SERIES)
    with pytest.raises(ValueError, match="built for 8"):
        model(torch.zeros(2, SERIES.seq_len + 1, 2))


@pytest.mark.parametrize("name", ["simple_transformer", "latent_transformer"])
def test_sequence_models_answer_at_every_output_position(name: str) -> None:
    model = build_model(name, {"dropout": 0.0}, SEQUENCE).eval()
    tokens = _inputs(name)
    with torch.no_grad():
        logits = model(tokens)
        assert logits.shape == (len(tokens), SEQUENCE.output_len, SEQUENCE.num_outputs)
        # Each answer position has its own learned token, so positions answer differently.
        assert not torch.allclose(logits[:, 0], logits[:, 1], atol=1e-5)
        changed = tokens.clone()
        changed[:, 0] = (changed[:, 0] + 1) % SEQUENCE.vocab_size
        assert not torch.allclose(model(changed), logits, atol=1e-5)
    with pytest.raises(ValueError, match="built for 8"):
        model(tokens[:, :-1])


def test_latent_tokens_are_appended_only_to_the_latent_transformer() -> None:
    simple = build_model("simple_transformer", {}, SEQUENCE)
    latent = build_model("latent_transformer", {"num_latents": 5}, SEQUENCE)
    assert simple.appended.shape == (SEQUENCE.output_len, 64)
    assert latent.appended.shape == (5 + SEQUENCE.output_len, 64)


def test_sequence_data_check_names_the_problem() -> None:
    with pytest.raises(ValueError, match="output_len of at least 1, got 0"):
        check_sequence_data(DataSpec("token_sequence", 8, 10, vocab_size=12, output_len=0), "latent_transformer")
    with pytest.raises(ValueError, match="seq_len of at least 1"):
        check_sequence_data(DataSpec("token_sequence", 0, 10, vocab_size=12, output_len=2), "latent_transformer")
