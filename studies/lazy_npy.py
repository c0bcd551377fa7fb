"""Data that stays on disk: a Dataset that loads one small ``.npy`` file per example, with loader workers.

    python studies/lazy_npy.py /tmp/blobs 2000          # write 2,000 example files once
    hpsearch run studies/lazy_npy.toml --data /tmp/blobs --num-workers 2

Each example is a file ``NNNNNN_L.npy`` holding 32 float32 features; ``L`` in its name is its
label. Nothing is read until a batch needs it, so the data may be far larger than memory;
``--num-workers 2`` loads the files in two processes while the model trains. Any folder of
``.npy`` files named this way works (``--data`` names it; in the study file, relative to it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchmetrics.classification import MulticlassAccuracy

from hpsearch.models import DataSpec, HyperParam, register_model
from hpsearch.trainers import Task, register_task

FEATURES = 32
CLASSES = 4


class NpyFolder(Dataset):
    """One example per ``.npy`` file, read when asked for: ``(FloatTensor[32], label)``."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path = self.files[index]
        return torch.from_numpy(np.load(path)), int(path.stem.rsplit("_", 1)[1])


def npy_folder(data: str, val_fraction: float) -> Task:
    """The files of the folder ``data``, sorted by name; every file from ``1 - val_fraction`` on is validation."""
    folder = Path(data)
    if not folder.is_dir():
        raise ValueError(f"--data {data}: no such folder; write one with: python studies/lazy_npy.py FOLDER COUNT")
    files = sorted(folder.glob("*.npy"))
    if len(files) < 10:
        raise ValueError(f"--data {data}: {len(files)} .npy files; at least 10 are needed")
    n_train = int(len(files) * (1 - val_fraction))
    return Task(
        name="npy_folder",
        data=DataSpec(kind="tabular", num_features=FEATURES, num_outputs=CLASSES),
        train=NpyFolder(files[:n_train]),
        val=NpyFolder(files[n_train:]),
        loss=F.cross_entropy,
        metrics={"val_acc": lambda: MulticlassAccuracy(num_classes=CLASSES, average="micro")},
    )


register_task(
    "npy_folder",
    npy_folder,
    [
        HyperParam("data", "str", "", "the folder of NNNNNN_LABEL.npy files (in a study file: relative to the file)"),
        HyperParam("val_fraction", "float", 0.2, "share of the files held out for validation", low=0.05, high=0.9),
    ],
    "a folder of .npy files, one example each, loaded lazily",
)


class FeatureMLP(nn.Module):
    def __init__(self, data: DataSpec, hidden_size: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(data.num_features or FEATURES, hidden_size), nn.ReLU(), nn.Linear(hidden_size, data.num_outputs or CLASSES))

    def forward(self, features: Tensor) -> Tensor:
        return self.body(features)


register_model(
    "feature_mlp",
    FeatureMLP,
    params=[HyperParam("hidden_size", "int", 32, "width of the hidden layer", low=1)],
    description="a one-hidden-layer MLP over a vector of features",
    input_kind="tabular",
)


def write_examples(folder: str | Path, count: int, seed: int = 0) -> Path:
    """Write ``count`` example files: Gaussian blobs, one centre per class, into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLASSES, FEATURES)).astype(np.float32)
    for index in range(count):
        label = int(rng.integers(CLASSES))
        features = centres[label] + rng.normal(scale=1.5, size=FEATURES).astype(np.float32)
        np.save(folder / f"{index:06d}_{label}.npy", features)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python studies/lazy_npy.py FOLDER COUNT")
    print(f"wrote {sys.argv[2]} examples to {write_examples(sys.argv[1], int(sys.argv[2]))}")
