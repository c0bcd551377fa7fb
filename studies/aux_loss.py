"""A custom training step: a model with two heads, and an auxiliary loss whose weight is swept.

    hpsearch run studies/aux_loss.toml
    hpsearch --plugin studies/aux_loss.py --models two_head_mlp --task digits_parity \
        --param_sweep aux_weight:0,0.3,1 --metric val_acc

The model reads scikit-learn's 8x8 digits as 64 numbers and returns a dict: ``logits`` for the
digit and ``parity``, one logit for whether the digit is odd. The task's step combines the two
losses, ``digit + aux_weight * parity``. ``aux_weight`` is declared in the step's schema, so
it is typed, checked and sweepable like a model's hyperparameter; the step logs both parts,
which land in the per-epoch table as ``train_digit_loss``, ``val_parity_loss``, and so on.
Everything else (autocast, clipping, the divergence guard, FLOPs of the model's forward
passes, checkpoints) the trainer keeps doing around the step.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from hpsearch.models import DataSpec, HyperParam, register_model
from hpsearch.trainers import Step, StepOutput, Task, register_task


def two_loss_step(model: nn.Module, batch: Any, hparams: Mapping[str, Any]) -> StepOutput:
    """The digit's cross-entropy plus ``aux_weight`` times the parity's binary cross-entropy."""
    features, digits = batch
    out = model(features)
    digit_loss = F.cross_entropy(out["logits"].float(), digits, label_smoothing=hparams["label_smoothing"])
    parity_loss = F.binary_cross_entropy_with_logits(out["parity"].float(), (digits % 2).float())
    return StepOutput(
        loss=digit_loss + hparams["aux_weight"] * parity_loss,
        outputs=out["logits"],  # what val_acc scores
        targets=digits,
        logs={"digit_loss": digit_loss.detach(), "parity_loss": parity_loss.detach()},
    )


def digits_parity(val_fraction: float, data_seed: int) -> Task:
    """scikit-learn's digits as 64 features; the label is the digit (its parity is the auxiliary target)."""
    from sklearn.datasets import load_digits  # an example-only dependency: imported when used

    bunch = load_digits()
    features = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(data_seed))
    features, labels = features[order], labels[order]
    n_val = int(len(labels) * val_fraction)
    return Task(
        name="digits_parity",
        data=DataSpec(kind="tabular", num_features=64, num_outputs=10),
        train=(features[n_val:], labels[n_val:]),
        val=(features[:n_val], labels[:n_val]),
        step=Step(two_loss_step, params=[HyperParam("aux_weight", "float", 0.3, "weight of the parity loss", low=0.0)]),
        metrics={"val_acc": lambda: MulticlassAccuracy(num_classes=10, average="micro")},
    )


register_task(
    "digits_parity",
    digits_parity,
    [
        HyperParam("val_fraction", "float", 0.2, "share of the digits held out for validation", low=0.05, high=0.9),
        HyperParam("data_seed", "int", 0, "seed of the split"),
    ],
    "scikit-learn's digits as features, with the digit's parity as an auxiliary target",
)


class TwoHeadMLP(nn.Module):
    """A shared hidden layer, then a digit head and a parity head: returns a dict of both."""

    def __init__(self, data: DataSpec, hidden_size: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(data.num_features or 64, hidden_size), nn.ReLU())
        self.digit = nn.Linear(hidden_size, data.num_outputs or 10)
        self.parity = nn.Linear(hidden_size, 1)

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        hidden = self.body(features)
        return {"logits": self.digit(hidden), "parity": self.parity(hidden).squeeze(-1)}


register_model(
    "two_head_mlp",
    TwoHeadMLP,
    params=[HyperParam("hidden_size", "int", 64, "width of the shared layer", low=1)],
    description="an MLP with a digit head and a parity head (returns a dict)",
    input_kind="tabular",
)
