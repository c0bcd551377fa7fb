"""The two-example run of a user's model before any trial: its errors are one line naming the model."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hpsearch.models import DataSpec, HyperParam, register_model
from hpsearch.search import UsageError, search
from hpsearch.trainers import Task


class ExtraAxis(nn.Module):
    """A forecaster that keeps a trailing axis: (batch, horizon, 1) where the targets are (batch, horizon)."""

    def __init__(self, data: DataSpec, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(data.num_features, data.num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).unsqueeze(-1)


@pytest.fixture
def extra_axis_model():
    spec = register_model("probe_extra_axis", ExtraAxis, [HyperParam("width", "int", 4, "unused", low=1)], input_kind="tabular")
    yield spec
    from hpsearch.models import registry

    registry._MODELS.remove("probe_extra_axis")


def test_outputs_the_loss_cannot_take_are_named_by_their_shape_without_torchs_warning(tmp_path, extra_axis_model):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g), torch.randn(40, 3, generator=g)
    task = Task(name="probe_regression", train=(x[:30], y[:30]), val=(x[30:], y[30:]), loss=F.mse_loss,
                data=DataSpec(kind="tabular", num_features=6, num_outputs=3))
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with pytest.raises(UsageError) as caught:
            search(extra_axis_model, task, epochs=1, storage=f"sqlite:///{tmp_path / 'p.db'}", output_dir=tmp_path)
    # mse_loss broadcasts (2, 3, 1) against (2, 3), warns, then fails on the sizes: the shapes are the news.
    assert str(caught.value).endswith("returns outputs of shape [2, 3, 1] for input of shape [2, 6]; the task needs [2, 3]")
    assert [str(w.message) for w in shown if issubclass(w.category, UserWarning)] == []
    assert list(tmp_path.iterdir()) == []


def test_a_step_that_returns_no_outputs_for_a_task_with_metrics_is_refused(tmp_path, extra_axis_model):
    from torchmetrics.regression import MeanSquaredError

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g), torch.randn(40, 3, generator=g)

    def loss_only(model, batch, hparams):
        inputs, targets = batch
        return F.mse_loss(model(inputs).squeeze(-1), targets)

    task = Task(name="probe_loss_only", train=(x[:30], y[:30]), val=(x[30:], y[30:]), step=loss_only,
                metrics={"val_mse": MeanSquaredError}, data=DataSpec(kind="tabular", num_features=6, num_outputs=3))
    with pytest.raises(UsageError) as caught:
        search(extra_axis_model, task, epochs=1, storage=f"sqlite:///{tmp_path / 'p.db'}", output_dir=tmp_path)
    # The metric would read 0.0 in every trial: the step is what to mend, and the message says so.
    assert str(caught.value).startswith("the step of model probe_extra_axis")
    assert str(caught.value).endswith("returns no outputs, so the task's metrics (val_mse) would never be computed: "
                                      "return StepOutput(loss, outputs, targets)")
    assert list(tmp_path.iterdir()) == []


def test_a_validation_split_of_another_shape_is_refused_before_any_trial(tmp_path):
    from hpsearch.models import registry

    register_model("probe_mlp", lambda data, width: nn.Sequential(nn.Linear(data.num_features, width), nn.ReLU(),
                                                                  nn.Linear(width, data.num_outputs)),
                   [HyperParam("width", "int", 4, "units", low=1)], input_kind="tabular")
    try:
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(40, 6, generator=g), torch.randint(0, 2, (40,), generator=g)
        task = Task(name="probe_val_shape", train=(x[:30], y[:30]), val=(x[30:, :4], y[30:]), loss=F.cross_entropy,
                    data=DataSpec(kind="tabular", num_features=6, num_outputs=2))
        with pytest.raises(UsageError) as caught:
            search("probe_mlp", task, epochs=1, storage=f"sqlite:///{tmp_path / 'p.db'}", output_dir=tmp_path)
    finally:
        registry._MODELS.remove("probe_mlp")
    assert "fails on validation input of shape [2, 4]: RuntimeError: mat1 and mat2 shapes cannot be multiplied" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_column_of_outputs_against_flat_targets_suggests_shaping_the_targets_too(tmp_path):
    """The message named only the model, where the usual fix is the targets' unsqueeze."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g), torch.randn(40, generator=g)
    task = Task(name="probe_flat_targets", train=(x[:30], y[:30]), val=(x[30:], y[30:]), loss=F.mse_loss,
                data=DataSpec(kind="tabular", num_features=6, num_outputs=1))
    spec = register_model("probe_column", lambda data, width: torch.nn.Linear(data.num_features, 1),
                          [HyperParam("width", "int", 4, "unused", low=1)], input_kind="tabular")
    try:
        with pytest.raises(UsageError) as caught:
            search(spec, task, epochs=1, storage=f"sqlite:///{tmp_path / 'p.db'}", output_dir=tmp_path)
    finally:
        from hpsearch.models import registry

        registry._MODELS.remove("probe_column")
    assert str(caught.value).endswith("returns outputs of shape [2, 1] for input of shape [2, 6]; the task needs [2] "
                                      "(or give the task targets of shape [2, 1]: targets.unsqueeze(-1))")
