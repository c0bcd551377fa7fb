"""An MLP on scikit-learn's breast-cancer table, scored by exact ROC-AUC over the validation set.

    hpsearch run studies/breast_cancer_mlp.toml
    hpsearch --plugin studies/breast_cancer_mlp.py --models tabular_mlp --task breast_cancer \
        --param_sweep hidden_size:16,64 --metric val_auroc

569 tumours, 30 numeric features, benign or malignant: the table ships inside scikit-learn
(``pip install -e ".[examples]"``). Splits are plain tensors, the fast path; the model returns
one logit per example and the loss is binary cross-entropy. ``val_auroc`` is torchmetrics'
``BinaryAUROC``, accumulated over the whole validation set and computed once, so it equals
``sklearn.metrics.roc_auc_score`` on the same predictions (a mean of per-batch AUCs would not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from hpsearch.models import DataSpec, HyperParam, register_model
from hpsearch.trainers import Task, register_task


def binary_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def breast_cancer(val_fraction: float, data_seed: int) -> Task:
    """The table, standardised with the training part's mean and spread; the last ``val_fraction`` held out."""
    from sklearn.datasets import load_breast_cancer  # an example-only dependency: imported when used

    bunch = load_breast_cancer()
    features = torch.tensor(bunch.data, dtype=torch.float32)
    labels = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(data_seed))
    features, labels = features[order], labels[order]
    n_val = int(len(labels) * val_fraction)
    train_x, val_x = features[n_val:], features[:n_val]
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
    return Task(
        name="breast_cancer",
        data=DataSpec(kind="tabular", num_features=features.shape[1], num_outputs=1),
        train=((train_x - mean) / std, labels[n_val:]),
        val=((val_x - mean) / std, labels[:n_val]),
        loss=binary_cross_entropy,
        # BinaryAUROC and BinaryAccuracy take logits (they apply the sigmoid) and integer labels.
        metrics={"val_auroc": BinaryAUROC, "val_acc": BinaryAccuracy},
    )


register_task(
    "breast_cancer",
    breast_cancer,
    [
        HyperParam("val_fraction", "float", 0.25, "share of the rows held out for validation", low=0.05, high=0.9),
        HyperParam("data_seed", "int", 0, "seed of the split"),
    ],
    "scikit-learn's breast-cancer table: malignant or benign",
)


class TabularMLP(nn.Module):
    """``FloatTensor[batch, num_features]`` -> one logit per row."""

    def __init__(self, data: DataSpec, hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        width, layers = data.num_features or 1, []
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_size
        self.body = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, features: Tensor) -> Tensor:
        return self.body(features).squeeze(-1)


register_model(
    "tabular_mlp",
    TabularMLP,
    params=[
        HyperParam("hidden_size", "int", 32, "width of the hidden layers", low=1),
        HyperParam("num_layers", "int", 2, "hidden layers", low=0, high=8),
        HyperParam("dropout", "float", 0.1, "dropout after each hidden layer", low=0.0, high=0.9),
    ],
    description="an MLP for a table of numeric features, one logit out",
    input_kind="tabular",
)
