"""A CNN on scikit-learn's handwritten digits, through a Dataset with augmentation.

    hpsearch run studies/digits_cnn.toml
    hpsearch --plugin studies/digits_cnn.py --models digits_cnn --task digits \
        --param_sweep channels:8,16 --metric val_acc --epochs 4

The digits (1,797 images of 8x8 pixels, 10 classes) ship inside scikit-learn, so nothing is
downloaded: ``pip install -e ".[examples]"``. The training split is a ``torch.utils.data.Dataset``
whose ``__getitem__`` shifts each image by up to one pixel and adds noise, drawing from torch's
RNG; hpsearch seeds that RNG per item, so augmentations repeat with the seed, whatever
``--num-workers`` is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchmetrics.classification import MulticlassAccuracy

from hpsearch.models import DataSpec, HyperParam, register_model
from hpsearch.trainers import Task, register_task


class DigitImages(Dataset):
    """``(image, label)`` pairs: ``FloatTensor[1, 8, 8]`` scaled to [0, 1], and the digit."""

    def __init__(self, images: Tensor, labels: Tensor, augment: bool) -> None:
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        if self.augment:
            dx, dy = torch.randint(-1, 2, (2,)).tolist()
            image = torch.roll(image, shifts=(dy, dx), dims=(1, 2)) + 0.05 * torch.randn_like(image)
        return image, self.labels[index]


def digits(val_fraction: float, augment: bool, data_seed: int) -> Task:
    """scikit-learn's digits, shuffled with ``data_seed``, the last ``val_fraction`` held out."""
    from sklearn.datasets import load_digits  # an example-only dependency: imported when used

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(data_seed))
    images, labels = images[order], labels[order]
    n_val = int(len(labels) * val_fraction)
    return Task(
        name="digits",
        data=DataSpec(kind="image", num_outputs=10, input_shape=(1, 8, 8)),
        train=DigitImages(images[n_val:], labels[n_val:], augment),
        val=DigitImages(images[:n_val], labels[:n_val], augment=False),
        loss=F.cross_entropy,  # takes label_smoothing=, so --label-smoothing works too
        metrics={"val_acc": lambda: MulticlassAccuracy(num_classes=10, average="micro")},
    )


register_task(
    "digits",
    digits,
    [
        HyperParam("val_fraction", "float", 0.2, "share of the images held out for validation", low=0.05, high=0.9),
        HyperParam("augment", "bool", True, "shift training images by up to a pixel and add noise"),
        HyperParam("data_seed", "int", 0, "seed of the split"),
    ],
    "scikit-learn's 8x8 handwritten digits, as images",
)


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, max-pooling to 4x4, and a linear classifier."""

    def __init__(self, data: DataSpec, channels: int, dropout: float) -> None:
        super().__init__()
        in_channels = data.input_shape[0] if data.input_shape else 1
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * channels * 16, data.num_outputs or 10))

    def forward(self, images: Tensor) -> Tensor:  # [batch, 1, 8, 8] -> [batch, 10]
        return self.head(self.features(images))


register_model(
    "digits_cnn",
    DigitsCNN,
    params=[
        HyperParam("channels", "int", 16, "channels of the first convolution (the second has twice as many)", low=1),
        HyperParam("dropout", "float", 0.1, "dropout before the classifier", low=0.0, high=0.9),
    ],
    description="a small CNN for 8x8 images",
    input_kind="image",
)
