"""Every model in the zoo: shapes, gradients, meta-device builds, and that each hyperparameter reaches the module."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hpsearch.models import DataSpec, HyperParam, build_model, get_model, list_models
from hpsearch.models.tfn import build_tfn_classifier
from hpsearch.models.zoo import EVOLUTION_TYPES, KERNEL_TYPES

# One small DataSpec per input kind; each model is built for the one of its kind.
DATA_BY_KIND = {
    "tokens": DataSpec(kind="tokens", seq_len=8, num_outputs=3, vocab_size=11),
    "token_sequence": DataSpec(kind="token_sequence", seq_len=8, num_outputs=10, vocab_size=12, output_len=4),
    "series": DataSpec(kind="series", seq_len=8, num_outputs=3, num_features=2),
}
# What each kind cannot do without: removing the field must make every model of the kind refuse.
REQUIRED_FIELDS = {"tokens": ("vocab_size",), "token_sequence": ("vocab_size", "output_len"), "series": ("num_features",)}
DATA = DATA_BY_KIND["tokens"]
BATCH = 4
TFN_MODELS = ("tfn_classifier", "tfn_regressor")
TFN_VARIANTS = [{"kernel_type": k, "evolution_type": e} for k, e in itertools.product(KERNEL_TYPES, EVOLUTION_TYPES)]
# Every model at its defaults, plus each TFN kernel x evolution pairing.
VARIANTS = [(spec.name, {}) for spec in list_models()] + [(name, hp) for name in TFN_MODELS for hp in TFN_VARIANTS]


def _variant_id(variant: tuple[str, dict[str, Any]]) -> str:
    name, hp = variant
    return "-".join([name, *map(str, hp.values())])


def _tokens(seed: int = 0, batch: int = BATCH, data: DataSpec = DATA) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, data.vocab_size or 1, (batch, data.seq_len), generator=g)


def _data(name: str) -> DataSpec:
    return DATA_BY_KIND[get_model(name).input_kind]


def _inputs(name: str, seed: int = 0) -> torch.Tensor:
    """A batch of the input model ``name`` takes."""
    data = _data(name)
    if data.kind == "series":
        g = torch.Generator().manual_seed(seed)
        return torch.randn(BATCH, data.seq_len, data.num_features or 1, generator=g)
    return _tokens(seed, data=data)


def _output_shape(data: DataSpec) -> tuple[int, ...]:
    return (BATCH, data.output_len, data.num_outputs) if data.output_len else (BATCH, data.num_outputs)


def _loss(outputs: torch.Tensor, data: DataSpec) -> torch.Tensor:
    """A loss of the kind the model's tasks use, against fixed targets."""
    if data.kind == "series":
        return F.mse_loss(outputs, torch.linspace(-1, 1, outputs.numel()).reshape(outputs.shape))
    logits = outputs.reshape(-1, data.num_outputs)  # one row per answer: per example, or per output position
    return F.cross_entropy(logits, torch.arange(len(logits)) % data.num_outputs)


def _build(name: str, hparams: dict[str, Any], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, hparams, _data(name))


def _candidates(param: HyperParam) -> list[Any]:
    """Values other than the default to try, nearest first; the first one that builds is used."""
    if param.kind == "choice":
        return [c for c in param.choices or () if c != param.default]
    if param.kind == "bool":
        return [not param.default]
    if param.kind == "int":
        d = param.default
        raw = [d + 1, d - 1, 2 * d, d // 2, d + 2, d - 2, param.low, param.high]
    elif param.kind == "float":
        d = param.default
        high = param.high if param.high is not None else 2 * d + 1
        low = param.low if param.low is not None else d - 1
        raw = [(d + high) / 2, (d + low) / 2]
    else:
        return [param.default + "_other"]
    out = []
    for value in raw:
        if value is None or value == param.default or value in out:
            continue
        try:
            out.append(param.validate(value))
        except ValueError:
            pass
    return out


def _other_value(model_name: str, param: HyperParam) -> tuple[Any, nn.Module]:
    """A valid non-default value of ``param`` and the model built with it."""
    for value in _candidates(param):
        try:
            return value, _build(model_name, {param.name: value})
        except ValueError:
            continue  # e.g. an embed_dim that num_heads doesn't divide
    pytest.fail(f"no other valid value of {model_name}.{param.name} builds")


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


MODEL_PARAMS = [(spec.name, p.name) for spec in list_models() for p in spec.params]


def test_zoo_has_every_model() -> None:
    zoo = {
        "tfn_classifier", "transformer_classifier", "tfn_regressor", "lstm_classifier", "cnn_classifier",
        "simple_transformer", "latent_transformer",
    }
    assert zoo <= {spec.name for spec in list_models()}
    # Only the zoo's own: plugins that tests run earlier in this process loaded add image and tabular models.
    assert {spec.input_kind for spec in list_models() if spec.name in zoo} <= set(DATA_BY_KIND)


@pytest.mark.parametrize(("model_name", "param_name"), MODEL_PARAMS, ids=[f"{m}.{p}" for m, p in MODEL_PARAMS])
def test_each_hyperparameter_reaches_the_module(model_name: str, param_name: str) -> None:
    # Guards against the old bug where registry defaults silently replaced swept values.
    param = get_model(model_name).param(param_name)
    assert param is not None
    value, changed = _other_value(model_name, param)
    default = _build(model_name, {})
    if param_name == "dropout":
        # Dropout is invisible in eval mode and random in train mode; the configuration shows it.
        assert repr(changed) != repr(default), f"{param_name}={value} left the module unchanged"
        assert f"p={value}" in repr(changed)
        return
    if _param_count(changed) != _param_count(default) or repr(changed) != repr(default):
        return
    changed.eval()
    default.eval()
    with torch.no_grad():
        same_output = torch.allclose(changed(_inputs(model_name)), default(_inputs(model_name)))
    assert not same_output, f"{model_name} built with {param_name}={value} is identical to its default"


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_forward_gives_finite_logits_of_the_right_shape(variant: tuple[str, dict[str, Any]]) -> None:
    name, hparams = variant
    model = _build(name, hparams)
    for mode in (model.train, model.eval):
        mode()
        logits = model(_inputs(name))
        assert logits.shape == _output_shape(_data(name))
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_backward_gives_finite_gradients_for_every_parameter(variant: tuple[str, dict[str, Any]]) -> None:
    name, hparams = variant
    model = _build(name, hparams)
    _loss(model(_inputs(name)), _data(name)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    # The learnable kernel widths/frequencies and diffusion rates must actually be trained.
    field_params = {
        n: p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] in {"log_sigma", "log_radius", "log_omega", "rate_logit"}
    }
    if name in TFN_MODELS:
        assert field_params, "the TFN has no kernel parameters"
        expected_kernel = {"rbf": "log_sigma", "compact": "log_radius", "fourier": "log_omega"}[
            hparams.get("kernel_type", "rbf")
        ]
        assert any(n.endswith(expected_kernel) for n in field_params)
        assert any(n.endswith("rate_logit") for n in field_params) == (hparams.get("evolution_type") == "pde")
    for pname, p in field_params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{pname} got a zero gradient"


def test_rbf_and_compact_kernels_give_different_outputs() -> None:
    rbf = _build("tfn_classifier", {"kernel_type": "rbf"}).eval()
    compact = _build("tfn_classifier", {"kernel_type": "compact"}).eval()
    with torch.no_grad():
        assert not torch.allclose(rbf(_tokens()), compact(_tokens()), atol=1e-5)


@pytest.mark.parametrize("kernel_type", KERNEL_TYPES)
@pytest.mark.parametrize("extreme", [-20.0, 20.0])
def test_tfn_stays_finite_when_field_parameters_run_to_extremes(kernel_type: str, extreme: float) -> None:
    model = _build("tfn_classifier", {"kernel_type": kernel_type, "evolution_type": "pde"})
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.rsplit(".", 1)[-1] in {"log_sigma", "log_radius", "log_omega", "rate_logit"}:
                p.fill_(extreme)  # an optimiser gone far astray
    for layer in model.layers:
        assert all(0.0 <= step.rate.item() <= 0.5 for step in layer.evolution)
    logits = model(_tokens())
    F.cross_entropy(logits, torch.arange(BATCH) % DATA.num_outputs).backward()
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_tfn_uses_token_positions() -> None:
    # Mean-pooling forgets order; the field layers must carry where each token stands.
    model = _build("tfn_classifier", {}).eval()
    tokens = _tokens()
    with torch.no_grad():
        assert not torch.allclose(model(tokens), model(tokens.flip(1)), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "hparams", "message"),
    [
        ("transformer_classifier", {"embed_dim": 6, "num_heads": 4}, "divisible"),
        ("transformer_classifier", {"num_heads": 0}, "minimum"),
        ("tfn_classifier", {"num_layers": 13}, "maximum"),
        ("tfn_classifier", {"kernel_type": "gauss"}, "kernel_type"),
        ("tfn_classifier", {"dropout": 1.0}, "maximum"),
        ("tfn_classifier", {"grid_size": 3}, "minimum"),
        ("tfn_classifier", {"embed_dimension": 8}, "no hyperparameter"),
    ],
)
def test_invalid_hyperparameters_raise_value_error(name: str, hparams: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(name, hparams, DATA)


@pytest.mark.parametrize("name", [spec.name for spec in list_models()])
def test_invalid_data_raises_value_error(name: str) -> None:
    spec = get_model(name)
    data = DATA_BY_KIND[spec.input_kind]
    for missing in REQUIRED_FIELDS[spec.input_kind]:
        with pytest.raises(ValueError, match=missing):
            build_model(name, {}, replace(data, **{missing: None}))
    defaults = spec.resolve({})
    for kind, other in DATA_BY_KIND.items():
        if kind == spec.input_kind:
            continue
        # Through the registry and through the builder alone: one line naming both kinds.
        for build in (lambda: build_model(name, {}, other), lambda: spec.build(other, **defaults)):
            with pytest.raises(ValueError, match=rf"takes \w+ input, but the task gives '?{kind}'?$") as error:
                build()
            assert "\n" not in str(error.value)


def test_builders_reject_unknown_kinds_when_called_directly() -> None:
    defaults = get_model("tfn_classifier").resolve({})
    with pytest.raises(ValueError, match="evolution_type"):
        build_tfn_classifier(DATA, **{**defaults, "evolution_type": "ode"})


def test_transformer_rejects_inputs_longer_than_its_positions() -> None:
    model = _build("transformer_classifier", {})
    with pytest.raises(ValueError, match="at most 8"):
        model(torch.zeros(2, DATA.seq_len + 1, dtype=torch.long))


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_models_build_on_the_meta_device(variant: tuple[str, dict[str, Any]]) -> None:
    name, hparams = variant
    with torch.device("meta"):
        model = build_model(name, hparams, _data(name))
    params = list(model.parameters())
    assert params and all(p.is_meta for p in params)
    assert _param_count(model) == _param_count(_build(name, hparams))


def _first_half_task(n: int, data: DataSpec, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Label = the most frequent token bucket (``token % classes``) in the first half.

    One bucket is enriched in the first half and a different one, equally, in the second.
    """
    g = torch.Generator().manual_seed(seed)
    classes, half, vocab = data.num_outputs, data.seq_len // 2, data.vocab_size or 1
    first = torch.randint(0, classes, (n,), generator=g)
    second = (first + torch.randint(1, classes, (n,), generator=g)) % classes
    bucket = torch.cat([first[:, None].expand(-1, half), second[:, None].expand(-1, data.seq_len - half)], 1)
    planted = torch.randint(0, vocab // classes, (n, data.seq_len), generator=g) * classes + bucket
    noise = torch.randint(0, vocab, (n, data.seq_len), generator=g)
    tokens = torch.where(torch.rand(n, data.seq_len, generator=g) < 0.5, planted, noise)
    labels = F.one_hot(tokens[:, :half] % classes, classes).sum(dim=1).argmax(dim=1)
    return tokens, labels


@pytest.mark.parametrize("name", ["tfn_classifier", "transformer_classifier"])
def test_default_model_learns_a_task_that_needs_positions(name: str) -> None:
    # A position-blind model sees two enriched buckets and tops out near 50%.
    data = DataSpec(kind="tokens", seq_len=16, num_outputs=4, vocab_size=32)
    x, y = _first_half_task(2048, data, seed=0)
    val_x, val_y = _first_half_task(512, data, seed=1)
    torch.manual_seed(0)
    model = build_model(name, {}, data)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(4):
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model.eval()(val_x).argmax(dim=1) == val_y).float().mean().item()
    assert accuracy > 0.85, f"{name} reached only {accuracy:.0%}"
