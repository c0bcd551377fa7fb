"""Every model in the zoo trains on a task of its input kind, and the TFN regressor forecasts ETTh1."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from hpsearch.models import build_model, list_models
from hpsearch.trainers.config import TrainConfig
from hpsearch.trainers.flops import FlopsMeter
from hpsearch.trainers.tasks import Task, build_task
from hpsearch.trainers.timeseries import last_value_forecast
from hpsearch.trainers.trainer import Trainer, seed_everything
from tests.trainers.test_timeseries import etth1_path


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # These models are tiny: on two cores shared with other jobs a second torch thread mostly
    # waits for the first, and makes training ~10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sine_csv(tmp_path: Path) -> Task:
    rows = 240
    frame = pd.DataFrame({"OT": [math.sin(i / 6) + 0.01 * i for i in range(rows)], "aux": [i % 24.0 for i in range(rows)]})
    frame.to_csv(tmp_path / "sine.csv", index=False)
    return build_task("csv_timeseries", {"data": str(tmp_path / "sine.csv"), "window": 16, "horizon": 4, "features": "all"})


# A small task for each input kind a model can take.
TASKS: dict[str, Callable[[Path], Task]] = {
    "tokens": lambda _: build_task("synthetic_tokens", {"dataset_size": 120, "seq_len": 8}),
    "token_sequence": lambda _: build_task("multiplication", {"digits": 2, "dataset_size": 120}),
    "series": sine_csv,
}


@pytest.mark.parametrize("name", [spec.name for spec in list_models()])
def test_every_model_trains_an_epoch_on_its_task(name: str, tmp_path: Path) -> None:
    spec = next(s for s in list_models() if s.name == name)
    assert spec.input_kind in TASKS, f"no task in this test gives {spec.input_kind} input"
    task = TASKS[spec.input_kind](tmp_path)
    seed_everything(0)
    model = build_model(name, {}, task.data)
    meter = FlopsMeter(model)
    record = Trainer(model, task, TrainConfig(epochs=1, batch_size=32), flops_meter=meter).fit().records[0]
    assert math.isfinite(record.train_loss) and math.isfinite(record.val_loss)
    assert set(record.metrics) == set(task.metrics)
    assert all(math.isfinite(v) for v in record.metrics.values())
    assert record.grad_norm_mean > 0
    assert meter.stats().total > 0


# (hyperparameters, learning rate): a short grid, as `hpsearch --param-sweep` would run it.
ETTH1_SEARCH = [({}, 1e-3), ({}, 3e-3), ({"num_layers": 2, "embed_dim": 32}, 1e-3)]


def test_short_search_with_tfn_regressor_beats_the_last_value_forecast_on_etth1() -> None:
    # Every other window keeps the search short; validation and test use the same windows.
    task = build_task("csv_timeseries", {"data": str(etth1_path()), "stride": 2})
    assert task.test is not None
    x_test, y_test = task.test
    naive_mse = F.mse_loss(last_value_forecast(x_test, task.data.num_outputs), y_test).item()
    best: tuple[float, Trainer, dict] | None = None
    for hparams, lr in ETTH1_SEARCH:
        seed_everything(0)
        model = build_model("tfn_regressor", hparams, task.data)
        trainer = Trainer(model, task, TrainConfig(epochs=3, lr=lr, warmup_epochs=0.2))
        val_mse = trainer.fit().records[-1].metrics["val_mse"]
        if best is None or val_mse < best[0]:
            best = (val_mse, trainer, {**hparams, "lr": lr})
    assert best is not None
    # Chosen on validation, scored once on the test part that no run has seen.
    _, test_metrics = best[1].evaluate(task.test)
    model_mse = test_metrics["val_mse"]
    print(f"ETTh1 OT, {task.data.num_outputs} steps ahead, test MSE (standardized): "
          f"tfn_regressor {model_mse:.4f} ({best[2]}), last value {naive_mse:.4f}")
    assert model_mse < naive_mse
