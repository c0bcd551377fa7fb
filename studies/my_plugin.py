"""A worked plugin: a model and a task of your own, searched like the built-in ones.

    hpsearch run studies/plugin_example.toml
    hpsearch --plugin studies/my_plugin.py --models mlp_forecaster --task noisy_sines \
        --param_sweep hidden_size:32,64 --metric val_mse
    hpsearch models --plugin studies/my_plugin.py

Importing this file is all a plugin does: ``register_model`` adds ``mlp_forecaster`` with the
schema of its hyperparameters (what ``--param_sweep`` checks and ``hpsearch models`` lists),
and ``register_task`` adds ``noisy_sines`` with its options (set in a study file's ``[task]``
table, or with the flags of the same name: ``--dataset-size``, ``--window``, ``--horizon``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanSquaredError

from hpsearch.models import DataSpec, HyperParam, register_model
from hpsearch.trainers.tasks import Task, register_task


class MLPForecaster(nn.Module):
    """The whole window, flattened, through an MLP to the next ``horizon`` values of the target."""

    def __init__(self, data: DataSpec, hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        width = data.seq_len * (data.num_features or 1)
        layers: list[nn.Module] = [nn.Flatten()]
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.GELU(), nn.Dropout(dropout)]
            width = hidden_size
        self.body = nn.Sequential(*layers, nn.Linear(width, data.num_outputs))

    def forward(self, series: Tensor) -> Tensor:
        """``FloatTensor[batch, seq_len, num_features]`` -> ``[batch, num_outputs]``."""
        return self.body(series)


register_model(
    "mlp_forecaster",
    MLPForecaster,  # called as build(data, **hyperparameters)
    params=[
        HyperParam("hidden_size", "int", 64, "width of the hidden layers", low=1),
        HyperParam("num_layers", "int", 2, "hidden layers", low=0, high=8),
        HyperParam("dropout", "float", 0.0, "dropout after each hidden layer", low=0.0, high=0.9),
    ],
    description="MLP over the flattened window",
    input_kind="series",  # FloatTensor[batch, seq_len, num_features], target last (see DataSpec)
)


def _mse(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.mse_loss(outputs.float(), targets)


def noisy_sines(dataset_size: int, window: int, horizon: int, noise: float, data_seed: int) -> Task:
    """Sums of two sines of random period and phase, plus noise: forecast the next ``horizon`` steps."""
    g = torch.Generator().manual_seed(data_seed)
    steps = torch.arange(window + horizon, dtype=torch.float32)
    periods = 8 + 24 * torch.rand(dataset_size, 2, 1, generator=g)
    phases = 2 * math.pi * torch.rand(dataset_size, 2, 1, generator=g)
    series = torch.sin(2 * math.pi * steps / periods + phases).sum(dim=1)
    series = series + noise * torch.randn(series.shape, generator=g)
    inputs, targets = series[:, :window, None], series[:, window:]
    n_val = dataset_size // 5
    return Task(
        name="noisy_sines",
        data=DataSpec(kind="series", seq_len=window, num_outputs=horizon, num_features=1),
        train=(inputs[n_val:], targets[n_val:]),
        val=(inputs[:n_val], targets[:n_val]),
        loss=_mse,
        metrics={"val_mse": MeanSquaredError},  # a torchmetrics class: made afresh for each trial
    )


register_task(
    "noisy_sines",
    noisy_sines,
    [
        HyperParam("dataset_size", "int", 2000, "series, 20% for validation", low=10),
        HyperParam("window", "int", 48, "steps the model sees", low=1),
        HyperParam("horizon", "int", 8, "steps it forecasts", low=1),
        HyperParam("noise", "float", 0.1, "standard deviation of the added noise", low=0.0),
        HyperParam("data_seed", "int", 0, "seed of the generated series"),
    ],
    "Sums of two noisy sines; forecast the next steps",
)
