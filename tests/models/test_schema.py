"""HyperParam parsing and validation, ModelSpec.resolve, and the registry's errors."""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn

from hpsearch.models import (
    DataSpec,
    HyperParam,
    ModelSpec,
    build_model,
    get_model,
    list_models,
    register_model,
    registry,
)

TOKENS = DataSpec(kind="tokens", seq_len=4, num_outputs=2, vocab_size=5)


# --- HyperParam.parse ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "text", "expected"),
    [
        (HyperParam("n", "int", 2), "3", 3),
        (HyperParam("n", "int", 2), " 3 ", 3),
        (HyperParam("n", "int", 2), "4.0", 4),
        (HyperParam("n", "int", 2), "1e2", 100),
        (HyperParam("x", "float", 0.1), "0.25", 0.25),
        (HyperParam("x", "float", 0.1), "2", 2.0),
        (HyperParam("b", "bool", False), "yes", True),
        (HyperParam("b", "bool", True), "OFF", False),
        (HyperParam("b", "bool", True), "0", False),
        (HyperParam("s", "str", "a"), "  hello ", "hello"),
        (HyperParam("k", "choice", "rbf", choices=("rbf", "compact")), "compact", "compact"),
        (HyperParam("w", "choice", 16, choices=(16, 32)), "32", 32),
    ],
)
def test_parse_gives_typed_values(param: HyperParam, text: str, expected: Any) -> None:
    value = param.parse(text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("param", "text", "message"),
    [
        (HyperParam("n", "int", 2), "3.5", "n: '3.5' is not a whole number, and n is an int"),
        (HyperParam("n", "int", 2), "true", "n: 'true' is a bool, and n is an int"),
        (HyperParam("x", "float", 0.1), "False", "x: 'False' is a bool, and x is a float"),
        (HyperParam("n", "int", 2), "three", "n: 'three' is not a valid int"),
        (HyperParam("x", "float", 0.1), "nan", "'nan' is not a valid float"),
        (HyperParam("x", "float", 0.1), "inf", "'inf' is not a valid float"),
        (HyperParam("x", "float", 0.1), "", "not a valid float"),
        (HyperParam("b", "bool", False), "maybe", "not a valid bool"),
        (HyperParam("k", "choice", "rbf", choices=("rbf", "compact")), "gauss", r"choose from rbf, compact"),
        (HyperParam("n", "int", 2, low=1, high=12), "13", "above the maximum 12"),
        (HyperParam("n", "int", 2, low=1, high=12), "0", "below the minimum 1"),
        (HyperParam("x", "float", 0.1, low=0.0, high=0.9), "0.95", "above the maximum 0.9"),
    ],
)
def test_parse_rejects_bad_text_with_a_message(param: HyperParam, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        param.parse(text)


def test_parse_bounds_are_inclusive() -> None:
    param = HyperParam("n", "int", 2, low=1, high=12)
    assert param.parse("1") == 1
    assert param.parse("12") == 12


# --- HyperParam.validate ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value"),
    [
        (HyperParam("n", "int", 2), True),
        (HyperParam("n", "int", 2), 2.0),
        (HyperParam("n", "int", 2), "2"),
        (HyperParam("x", "float", 0.1), False),
        (HyperParam("x", "float", 0.1), "0.1"),
        (HyperParam("x", "float", 0.1), float("inf")),
        (HyperParam("b", "bool", False), 1),
        (HyperParam("b", "bool", False), "true"),
        (HyperParam("s", "str", "a"), 3),
        (HyperParam("k", "choice", "rbf", choices=("rbf", "compact")), "RBF"),
        (HyperParam("w", "choice", 16, choices=(16, 32)), "16"),
    ],
)
def test_validate_rejects_values_of_the_wrong_type(param: HyperParam, value: Any) -> None:
    with pytest.raises(ValueError, match=f"^{param.name}: "):
        param.validate(value)


def test_validate_passes_good_values_through_and_widens_ints_to_float() -> None:
    assert HyperParam("n", "int", 2, low=1).validate(7) == 7
    widened = HyperParam("x", "float", 0.5, low=0.0, high=2.0).validate(1)
    assert widened == 1.0 and isinstance(widened, float)
    assert HyperParam("k", "choice", "a", choices=("a", "b")).validate("b") == "b"


def test_a_bad_schema_is_rejected_when_declared() -> None:
    with pytest.raises(ValueError, match="needs choices"):
        HyperParam("k", "choice", "a")
    with pytest.raises(ValueError, match="below the minimum"):
        HyperParam("n", "int", 0, low=1)
    with pytest.raises(ValueError, match="not one of"):
        HyperParam("k", "choice", "c", choices=("a", "b"))


def test_choices_given_as_a_list_are_kept_as_a_tuple() -> None:
    # A sweep keys on (kind, choices): a list there was a TypeError traceback from search().
    param = HyperParam("embed_dim", "choice", 32, choices=[16, 32])
    assert param.choices == (16, 32)
    assert hash(param) == hash(HyperParam("embed_dim", "choice", 32, choices=(16, 32)))


def test_type_name_lists_choices() -> None:
    assert HyperParam("k", "choice", "a", choices=("a", "b")).type_name == "a|b"
    assert HyperParam("n", "int", 1).type_name == "int"


# --- ModelSpec.resolve --------------------------------------------------------------------


def _spec(build: Any = None) -> ModelSpec:
    params = (
        HyperParam("width", "int", 8, low=1),
        HyperParam("rate", "float", 0.1, low=0.0, high=1.0),
        HyperParam("mode", "choice", "a", choices=("a", "b")),
    )
    return ModelSpec("toy", build or (lambda data, **hp: nn.Identity()), params)


def test_resolve_fills_defaults() -> None:
    assert _spec().resolve({}) == {"width": 8, "rate": 0.1, "mode": "a"}


def test_resolve_keeps_every_override_over_its_default() -> None:
    assert _spec().resolve({"width": 3, "mode": "b"}) == {"width": 3, "rate": 0.1, "mode": "b"}
    assert _spec().resolve({"rate": 0}) == {"width": 8, "rate": 0.0, "mode": "a"}


def test_resolve_rejects_unknown_names_and_bad_values() -> None:
    with pytest.raises(ValueError, match="model 'toy' has no hyperparameter depth, heads"):
        _spec().resolve({"heads": 2, "depth": 3, "width": 4})
    with pytest.raises(ValueError, match="width: 0 is below the minimum 1"):
        _spec().resolve({"width": 0})


def test_param_looks_up_by_name() -> None:
    spec = _spec()
    assert spec.param("rate") is spec.params[1]
    assert spec.param("missing") is None


# --- the registry -------------------------------------------------------------------------


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModelSpec]:
    """A copy of the registry that tests may add to without leaking models into others."""
    scratch = registry.Registry[ModelSpec]("model")
    for spec in registry.list_models():
        scratch.add(spec.name, spec)
    monkeypatch.setattr(registry, "_MODELS", scratch)
    return {spec.name: spec for spec in scratch.all()}


def test_registering_a_taken_name_is_an_error(scratch_registry: dict[str, ModelSpec]) -> None:
    with pytest.raises(ValueError, match="'tfn_classifier' is already registered"):
        register_model("tfn_classifier", lambda data, **hp: nn.Identity(), params=())
    assert scratch_registry["tfn_classifier"].description.startswith("Token Field Network")


def test_get_model_names_the_known_models_when_absent() -> None:
    with pytest.raises(KeyError, match="unknown model 'nope'; known models: .*tfn_classifier.*transformer_classifier"):
        get_model("nope")


def test_list_models_is_sorted_by_name(scratch_registry: dict[str, ModelSpec]) -> None:
    register_model("aaa_toy", lambda data, **hp: nn.Identity(), params=())
    names = [spec.name for spec in list_models()]
    assert names == sorted(names) and names[0] == "aaa_toy"


def test_build_model_passes_resolved_values_to_the_builder(scratch_registry: dict[str, ModelSpec]) -> None:
    seen: list[tuple[DataSpec, dict[str, Any]]] = []

    def build(data: DataSpec, **hp: Any) -> nn.Module:
        seen.append((data, hp))
        return nn.Identity()

    register_model("toy", build, params=_spec().params)
    build_model("toy", {"width": 5}, TOKENS)
    assert seen == [(TOKENS, {"width": 5, "rate": 0.1, "mode": "a"})]


def test_build_model_rejects_the_wrong_input_kind(scratch_registry: dict[str, ModelSpec]) -> None:
    register_model("toy_series", lambda data, **hp: nn.Identity(), params=(), input_kind="series")
    with pytest.raises(ValueError, match="model 'toy_series' takes series input, but the task gives tokens"):
        build_model("toy_series", {}, TOKENS)
