"""``csv_timeseries``: forecast one column of a CSV file from the time steps before it.

Rows are time steps in order. The inputs are the target column alone, or with
``features=all`` every numeric column (a date column is skipped). The file is split by time
into train, validation and test parts, standardized with the training part's statistics
only, and cut into windows: ``window`` steps of input, the next ``horizon`` values of the
target to predict. The target is always the last input feature, which is what series models
in the zoo rely on (see ``DataSpec``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from hpsearch.models import DataSpec
from hpsearch.trainers.metrics import MeanOf
from hpsearch.trainers.tasks import Task


def read_series(path: str, target: str, features: str) -> Tensor:
    """The CSV's columns as ``FloatTensor[rows, num_features]``, target last.

    Raises ``ValueError`` naming the file and the problem: missing file, no such column,
    a non-numeric target, missing values.
    """
    if not path:
        raise ValueError("csv_timeseries needs --data PATH, a CSV file with one row per time step")
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable CSV file ({str(error).splitlines()[0]})") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or error})") from None
    if target not in frame.columns:
        raise ValueError(f"{path}: no column {target!r} to forecast; columns: {', '.join(map(str, frame.columns))}")
    numeric = [str(c) for c in frame.select_dtypes("number").columns]
    if target not in numeric:
        raise ValueError(f"{path}: column {target!r} is not numeric")
    others = [c for c in numeric if c != target] if features == "all" else []
    columns = [*others, target]
    missing = frame[columns].isna().sum()
    if missing.any():
        holes = ", ".join(f"{name} ({count})" for name, count in missing[missing > 0].items())
        raise ValueError(f"{path}: missing values in {holes}; fill or drop them first")
    return torch.tensor(frame[columns].to_numpy(dtype="float32"))


def split_rows(rows: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Where validation and test start: the last fractions of the rows, in time order."""
    test_start = rows - int(rows * test_fraction)
    return test_start - int(rows * val_fraction), test_start


def standardize(values: Tensor, train_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """``values`` scaled to zero mean and unit variance over the first ``train_rows`` rows, and each column's mean and std.

    Statistics from the training part only: using later rows would leak the future.
    """
    train = values[:train_rows]
    mean, std = train.mean(dim=0), train.std(dim=0)
    # A constant column carries no signal; dividing by 1 keeps it finite instead of 0/0.
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (values - mean) / std, mean, std


def make_windows(values: Tensor, window: int, horizon: int, stride: int) -> tuple[Tensor, Tensor]:
    """Every ``stride``-th window: inputs ``[n, window, features]``, targets ``[n, horizon]``.

    One ``unfold``, no Python loop; the inputs stay a view of ``values``, so memory does not
    grow with the window length.
    """
    spans = values.unfold(0, window + horizon, stride)  # [n, features, window + horizon]
    return spans[:, :, :window].transpose(1, 2), spans[:, -1, window:].contiguous()


def last_value_forecast(x: Tensor, horizon: int) -> Tensor:
    """The naive forecast: the target's last observed value, repeated ``horizon`` times."""
    return x[:, -1, -1:].expand(-1, horizon)


def _mse_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.mse_loss(outputs.float(), targets)


# Sums over the validation set, as torchmetrics' MeanSquaredError and MeanAbsoluteError, whose
# import (and the scipy it loads) cost every trial's process 0.6 s before its first step.
def _mean_squared_error() -> MeanOf:
    return MeanOf(lambda outputs, targets: (outputs.float() - targets) ** 2, higher_is_better=False)


def _mean_absolute_error() -> MeanOf:
    return MeanOf(lambda outputs, targets: (outputs.float() - targets).abs(), higher_is_better=False)


def csv_timeseries(
    data: str,
    target: str,
    features: str,
    window: int,
    horizon: int,
    stride: int,
    val_fraction: float,
    test_fraction: float,
) -> Task:
    """Forecast a CSV column (``--data PATH --target COL``) ``horizon`` steps ahead; MSE and MAE."""
    held_out = val_fraction + test_fraction
    if held_out >= 1:
        raise ValueError(f"val_fraction + test_fraction must be below 1 (got {held_out:g}); nothing is left to train on")
    values = read_series(data, target, features)
    val_start, test_start = split_rows(len(values), val_fraction, test_fraction)
    # Validation and test windows may look back into the part before them, as a forecaster
    # would at that time; only the predicted values must lie inside the part.
    parts = {"train": (0, val_start), "validation": (val_start, test_start), "test": (test_start, len(values))}
    if test_start == len(values):
        del parts["test"]  # test_fraction 0: no test split
    # Sizes first: a part too short is the user's error, reported before any arithmetic on it.
    for name, (start, end) in parts.items():
        if end - start < horizon or end - max(0, start - window) < window + horizon:
            raise ValueError(
                f"{data}: the {name} part has {end - start} rows, too few for --window {window} and "
                f"--horizon {horizon}; use smaller ones or a longer file"
            )
    values, mean, std = standardize(values, val_start)
    splits = {
        name: make_windows(values[max(0, start - window) : end], window, horizon, stride)
        for name, (start, end) in parts.items()
    }
    return Task(
        name="csv_timeseries",
        data=DataSpec(kind="series", seq_len=window, num_outputs=horizon, num_features=values.shape[1]),
        train=splits["train"],
        val=splits["validation"],
        test=splits.get("test"),
        loss=_mse_loss,
        metrics={"val_mse": _mean_squared_error, "val_mae": _mean_absolute_error},
        target_scale=(float(mean[-1]), float(std[-1])),  # the target is the last column
    )
