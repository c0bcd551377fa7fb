"""The csv_timeseries task: windows, chronological splits, train-only standardization, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from hpsearch.models import build_model
from hpsearch.trainers.metrics import MetricSet
from hpsearch.trainers.tasks import Task, build_task
from hpsearch.trainers.timeseries import last_value_forecast

ETTH1 = Path(__file__).resolve().parents[3] / "shared/data/ETTh1.csv"


def etth1_path() -> Path:
    """The shared ETTh1 file; skips the test where it is absent, except under CI, where it must be there."""
    if not ETTH1.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{ETTH1} is missing; CI must provide the shared data")
        pytest.skip(f"{ETTH1} is absent (the shared data sits next to the project)")
    return ETTH1


def write_csv(path: Path, rows: int = 40) -> Path:
    """A date column, two features and OT = 0, 1, 2, ... so every window's values are known."""
    frame = pd.DataFrame({
        "date": pd.date_range("2020-01-01", periods=rows, freq="h").astype(str),
        "load": [float((3 * i) % 7) for i in range(rows)],
        "OT": [float(i) for i in range(rows)],
        "temp": [float(i % 5) for i in range(rows)],
    })
    frame.to_csv(path, index=False)
    return path


def task_for(path: Path, **options: object) -> Task:
    defaults = {"data": str(path), "window": 4, "horizon": 2, "val_fraction": 0.25, "test_fraction": 0.25}
    return build_task("csv_timeseries", {**defaults, **options})


def test_windows_follow_the_options_and_the_target_comes_last(tmp_path: Path) -> None:
    task = task_for(write_csv(tmp_path / "s.csv"), features="all")
    x, y = task.train
    # Rows 0..19 train, 20..29 validation, 30..39 test; windows of 4 + 2.
    assert x.shape == (15, 4, 3) and y.shape == (15, 2)
    assert task.data.kind == "series" and task.data.seq_len == 4 and task.data.num_outputs == 2
    assert task.data.num_features == 3
    # OT = row number, standardized with rows 0..19: mean 9.5.
    std = torch.arange(20.0).std()
    assert torch.allclose(x[:, :, -1] * std + 9.5, torch.arange(15.0)[:, None] + torch.arange(4.0))
    assert torch.allclose(y * std + 9.5, torch.arange(15.0)[:, None] + torch.arange(4.0, 6.0))
    only_target = task_for(tmp_path / "s.csv", features="target")
    assert only_target.data.num_features == 1
    assert torch.equal(only_target.train[0][..., 0], x[..., -1])


def test_splits_are_chronological_and_look_back_into_the_part_before(tmp_path: Path) -> None:
    task = task_for(write_csv(tmp_path / "s.csv"))
    std = torch.arange(20.0).std()
    unscale = lambda t: t * std + 9.5  # noqa: E731
    for (x, y), first_target, count in ((task.val, 20, 9), (task.test, 30, 9)):
        assert len(x) == count
        # The first window forecasts the part's first rows from the 4 rows just before it.
        assert torch.allclose(unscale(y[0]), torch.tensor([first_target, first_target + 1.0]))
        assert torch.allclose(unscale(x[0, :, 0]), torch.arange(first_target - 4.0, first_target))
        assert torch.allclose(unscale(y[-1]), torch.tensor([first_target + 8.0, first_target + 9.0]))


def test_standardization_uses_training_rows_only(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "s.csv")
    frame = pd.read_csv(path)
    frame.loc[30:, "OT"] += 1000.0  # a jump in the test part must not move the scaling
    frame.to_csv(path, index=False)
    task = task_for(path)
    assert torch.allclose(task.train[0][0, :, 0] * torch.arange(20.0).std() + 9.5, torch.arange(4.0))
    assert task.test is not None and task.test[1].min() > 100
    # What scaled the target: un-scaled with it, the test targets are the file's values again.
    mean, std = task.target_scale
    assert (mean, std) == pytest.approx((9.5, float(torch.arange(20.0).std())))
    file_targets = torch.tensor(frame["OT"].to_numpy()[30:], dtype=torch.float32).unfold(0, 2, 1)  # rows 30.. are test
    assert torch.allclose(task.test[1] * std + mean, file_targets)


def test_stride_and_no_test_split(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "s.csv")
    assert len(task_for(path, stride=2).train[0]) == 8
    task = task_for(path, test_fraction=0.0)
    assert task.test is None and len(task.val[0]) == 9 and len(task.train[0]) == 25


def test_loss_and_metrics_are_mse_and_mae(tmp_path: Path) -> None:
    task = task_for(write_csv(tmp_path / "s.csv"))
    targets = torch.zeros(3, 2)
    outputs = torch.tensor([[1.0, 1.0], [0.0, 2.0], [0.0, 0.0]])
    assert task.loss(outputs, targets).item() == pytest.approx(1.0)
    metrics = MetricSet(task.metrics, torch.device("cpu"))
    metrics.update(outputs, targets)
    computed = metrics.compute()
    assert computed["val_mse"] == pytest.approx((1.0 + 2.0) / 3)
    assert computed["val_mae"] == pytest.approx((1.0 + 1.0) / 3)
    assert task.directions() == {"val_mse": "minimize", "val_mae": "minimize"}


def test_last_value_forecast_repeats_the_targets_last_value() -> None:
    x = torch.arange(24.0).reshape(2, 4, 3)
    assert torch.equal(last_value_forecast(x, 3), torch.tensor([[11.0] * 3, [23.0] * 3]))


@pytest.mark.parametrize(
    ("options", "rows", "message"),
    [
        ({"data": ""}, None, "csv_timeseries needs --data PATH"),
        ({"data": "{tmp}/absent.csv"}, None, "absent.csv: no such file"),
        ({"target": "oil"}, 40, r"s.csv: no column 'oil' to forecast; columns: date, load, OT, temp"),
        ({"target": "date"}, 40, "s.csv: column 'date' is not numeric"),
        ({"window": 30}, 40, "s.csv: the train part has 20 rows, too few for --window 30 and --horizon 2"),
        ({"horizon": 11}, 40, "s.csv: the validation part has 10 rows, too few"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, 40, "nothing is left to train on"),
    ],
)
def test_bad_input_is_one_line_naming_the_file(tmp_path: Path, options: dict, rows: int | None, message: str) -> None:
    if rows is not None:
        write_csv(tmp_path / "s.csv", rows)
    options = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(ValueError, match=message) as error:
        task_for(tmp_path / "s.csv", **options)
    assert "\n" not in str(error.value)


def test_missing_values_and_unreadable_files_are_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "s.csv")
    frame = pd.read_csv(path)
    frame.loc[3, "OT"] = None
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"s.csv: missing values in OT \(1\)"):
        task_for(path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.csv: not a readable CSV file"):
        task_for(empty)


def test_series_task_refuses_token_models(tmp_path: Path) -> None:
    task = task_for(write_csv(tmp_path / "s.csv"))
    with pytest.raises(ValueError, match="takes tokens input, but the task gives series"):
        build_model("tfn_classifier", {}, task.data)


def test_etth1_with_the_default_options() -> None:
    path = etth1_path()
    task = build_task("csv_timeseries", {"data": str(path)})
    rows = len(pd.read_csv(path))
    train_rows = rows - 2 * int(rows * 0.2)
    x, y = task.train
    assert task.data.seq_len == 96 and task.data.num_outputs == 24 and task.data.num_features == 1
    assert len(x) == train_rows - 96 - 24 + 1
    assert task.test is not None and len(task.val[0]) == len(task.test[0]) == int(rows * 0.2) - 24 + 1
    # OT over the training rows is standardized; the later parts drift away from 0.
    target = torch.cat([x[0, :, 0], y[0], y[1:, -1]])  # every training row, once
    assert len(target) == train_rows
    assert target.mean().abs() < 1e-4 and (target.std() - 1).abs() < 1e-4
    assert task.test[1].mean().abs() > 0.1
    everything = build_task("csv_timeseries", {"data": str(path), "features": "all"})
    assert everything.data.num_features == 7
    assert torch.equal(everything.train[1], y)
