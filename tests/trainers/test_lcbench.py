"""The lcbench surrogate reader against yahpo-gym's own outputs (lcbench_reference.json).

The YAHPO data folder is the ``yahpo_data`` fixture (tests/conftest.py).

Tolerance: relative 1e-6 against the float32 value yahpo returned. Absolute 1e-6 cannot hold on
large targets: ``time`` reaches thousands of seconds, where one float32 step is ~1e-4 to 1e-3.
On the machine that wrote the reference (same onnxruntime) the values are equal bit for bit.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from hpsearch.trainers.lcbench import EPOCHS, TARGETS, LCBenchSurrogate, ParamRange

REFERENCE = Path(__file__).with_name("lcbench_reference.json")
CONFIG = {"batch_size": 64, "learning_rate": 0.01, "momentum": 0.9, "weight_decay": 0.001, "num_layers": 3,
          "max_units": 256, "max_dropout": 0.2}


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    return json.loads(REFERENCE.read_text())["rows"]


@pytest.fixture(scope="module")
def surrogates(yahpo_data: Path, reference: list[dict]) -> dict[str, LCBenchSurrogate]:
    instances = sorted({row["instance"] for row in reference})
    return {instance: LCBenchSurrogate(instance, yahpo_data) for instance in instances}


def test_every_reference_row_matches_yahpo(surrogates, reference):
    assert len(reference) == 120
    worst = 0.0
    for row in reference:
        got = surrogates[row["instance"]].evaluate(row["config"], row["epoch"])
        assert list(got) == list(row["targets"]) == list(TARGETS)
        for target, value in row["targets"].items():
            expected = float(np.float32(value))  # the JSON holds the shortest decimal of yahpo's float32
            assert math.isclose(got[target], expected, rel_tol=1e-6), (row, target, got[target])
            worst = max(worst, abs(got[target] / expected - 1))
    print(f"max relative difference to yahpo-gym: {worst:.2e}")


def test_curves_batch_equals_evaluate_point_by_point(surrogates, reference):
    configs = [row["config"] for row in reference if row["instance"] == "189873"][:5]
    surrogate = surrogates["189873"]
    curves = surrogate.curves(configs)
    assert list(curves) == list(TARGETS)
    for values in curves.values():
        assert values.shape == (5, EPOCHS) and values.dtype == np.float64
    for i, config in enumerate(configs):
        for epoch in range(1, EPOCHS + 1):
            point = surrogate.evaluate(config, epoch)
            assert point == {target: curves[target][i, epoch - 1] for target in TARGETS}
    # time is cumulative: it ends each curve far above its first epoch
    assert np.all(curves["time"][:, -1] > 5 * curves["time"][:, 0])


def test_target_range_from_global_statistics(surrogates):
    assert surrogates["167168"].target_range() == (14.945163, 87.94883)
    assert surrogates["167168"].target_range("time") == (0.66530454, 1216.0524)
    with pytest.raises(ValueError, match="val_accuracy"):
        surrogates["167168"].target_range("accuracy")


def test_space_holds_the_seven_hyperparameters(surrogates):
    space = surrogates["167168"].space
    assert space["batch_size"] == ParamRange(16, 512, log=True, integer=True)
    assert space["learning_rate"] == ParamRange(1e-4, 0.1, log=True, integer=False)
    assert space["max_units"] == ParamRange(64, 1024, log=True, integer=True)
    assert space["num_layers"] == ParamRange(1, 5, log=False, integer=True)
    assert set(space) == {"batch_size", "learning_rate", "momentum", "weight_decay", "num_layers", "max_units",
                          "max_dropout"}


def test_bad_configurations_are_refused(surrogates):
    surrogate = surrogates["167168"]
    surrogate.evaluate({**CONFIG, "batch_size": 64.0, "learning_rate": 1e-4}, 1)  # whole floats and bounds pass
    for bad, match in [({"momentum": 0.05}, "momentum"), ({"batch_size": 64.5}, "whole number"),
                       ({"max_dropout": float("nan")}, "max_dropout"), ({"epoch": 3}, "unknown parameters")]:
        with pytest.raises(ValueError, match=match):
            surrogate.curves([CONFIG, {**CONFIG, **bad}])
    with pytest.raises(ValueError, match="lacks 'momentum'"):
        surrogate.curves([{k: v for k, v in CONFIG.items() if k != "momentum"}])
    for epoch in (0, 53, 2.5):
        with pytest.raises(ValueError, match="epoch"):
            surrogate.evaluate(CONFIG, epoch)
    assert surrogate.curves([])["time"].shape == (0, EPOCHS)


def test_unknown_instance_names_the_valid_ones(yahpo_data):
    with pytest.raises(ValueError, match="167168.*189906"):
        LCBenchSurrogate("1", yahpo_data)
    with pytest.raises(ValueError, match="unknown lcbench instance '167083'"):  # in encoding.json, not an instance
        LCBenchSurrogate("167083", yahpo_data)


def test_missing_folder_or_file(yahpo_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LCBenchSurrogate("167168", tmp_path / "nowhere")
    shutil.copytree(yahpo_data / "global_statistics", tmp_path / "global_statistics")
    (tmp_path / "lcbench").mkdir()
    for name in ("config_space.json", "encoding.json"):
        shutil.copy(yahpo_data / "lcbench" / name, tmp_path / "lcbench" / name)
    with pytest.raises(FileNotFoundError, match="model.onnx"):
        LCBenchSurrogate("167168", tmp_path)


def test_missing_onnxruntime_says_how_to_install(yahpo_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        LCBenchSurrogate("167168", yahpo_data)
