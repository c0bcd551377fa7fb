"""Validation metrics over the whole set: exact ROC-AUC, directions, and early stopping on --metric."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from torchmetrics.classification import BinaryAUROC

from hpsearch.trainers import MeanOf, MetricSet, Task, TrainConfig, Trainer, seed_everything
from hpsearch.trainers.metrics import make_metric


def binary_task(n: int = 300) -> Task:
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 5, generator=g) + 0.7 * y[:, None].float()
    bce = lambda logits, targets: F.binary_cross_entropy_with_logits(logits, targets.float())  # noqa: E731
    return Task(name="binary", train=(x[:200], y[:200]), val=(x[200:], y[200:]), loss=bce, metrics={"val_auroc": BinaryAUROC})


class Logit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


def test_auroc_over_the_validation_set_equals_sklearn() -> None:
    task = binary_task()
    seed_everything(0)
    model = Logit()
    # Batches of 16 split the 100 validation rows; a mean of per-batch AUCs would differ.
    # fp32, as the scores recomputed below: autocast's bf16 would move the AUROC.
    trainer = Trainer(model, task, TrainConfig(epochs=2, batch_size=16, device="cpu", precision="fp32"))
    record = trainer.fit().records[-1]
    x_val, y_val = task.val
    with torch.no_grad():
        scores = torch.sigmoid(model(x_val)).numpy()
    assert record.metrics["val_auroc"] == pytest.approx(roc_auc_score(y_val.numpy(), scores), abs=1e-6)
    assert task.directions() == {"val_auroc": "maximize"}


def test_a_metric_without_update_compute_reset_is_refused() -> None:
    with pytest.raises(TypeError, match="metric 'bad' is a int without update, compute, reset"):
        make_metric(3, "bad")


def test_mean_of_averages_over_every_example() -> None:
    metrics = MetricSet({"hit": lambda: MeanOf(lambda o, t: (o == t).float())}, torch.device("cpu"))
    metrics.update(torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3]))
    metrics.update(torch.tensor([4]), torch.tensor([4]))
    assert metrics.compute() == {"hit": pytest.approx(3 / 4)}


class Constant:
    """A metric that never improves: early stopping on it stops after ``patience`` epochs."""

    higher_is_better = True

    def update(self, outputs, targets) -> None:
        pass

    def compute(self) -> float:
        return 0.5

    def reset(self) -> None:
        pass


@pytest.mark.parametrize(("monitor", "epochs_run"), [("val_flat", 2), ("val_loss", 6)])
def test_early_stopping_follows_the_monitored_metric(monitor: str, epochs_run: int) -> None:
    task = binary_task()
    task = Task(name="binary", train=task.train, val=task.val, loss=task.loss, metrics={"val_flat": Constant})
    seed_everything(0)
    config = TrainConfig(epochs=6, batch_size=32, lr=1e-2, device="cpu", early_stopping_patience=1, monitor=monitor)
    result = Trainer(Logit(), task, config).fit()
    assert result.epochs_run == epochs_run
