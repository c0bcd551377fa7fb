"""Loader workers: samples per second with ``--num-workers 0`` and ``2`` on a Dataset whose items cost 1 ms.

Each ``__getitem__`` waits ``--item-ms`` (1 ms) before returning its example, as a read from a
disk or a network store does, so loading, not the model, bounds the epoch. The model is a small
MLP; each run trains ``--epochs`` epochs through ``Trainer`` and the figure is the trainer's own
``samples_per_second`` of its epochs (training examples / epoch wall time, validation included),
median over epochs and rounds. Runs alternate between the worker counts.

    python benchmarks/loader_workers.py                 # 2,000 items, 3 epochs, 3 rounds
    python benchmarks/loader_workers.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from hpsearch.trainers import Task, TrainConfig, Trainer, seed_everything


class SlowItems(Dataset):
    """Gaussian features and a label; each item takes ``item_seconds`` to arrive."""

    def __init__(self, size: int, item_seconds: float) -> None:
        g = torch.Generator().manual_seed(0)
        self.y = torch.randint(0, 4, (size,), generator=g)
        self.x = torch.randn(size, 32, generator=g) + self.y[:, None].float()
        self.item_seconds = item_seconds

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        time.sleep(self.item_seconds)
        return self.x[index], self.y[index]


def run(task: Task, epochs: int, workers: int) -> list[float]:
    seed_everything(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
    config = TrainConfig(epochs=epochs, batch_size=64, num_workers=workers, device="cpu")
    return [r.samples_per_second for r in Trainer(model, task, config).fit().records]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--items", type=int, default=2000, help="training items (default %(default)s)")
    parser.add_argument("--item-ms", type=float, default=1.0, help="milliseconds each item takes (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 items, 2 epochs, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.epochs, args.repeats = 500, 2, 1
    task = Task(name="slow", train=SlowItems(args.items, args.item_ms / 1e3), val=SlowItems(args.items // 5, args.item_ms / 1e3), loss=F.cross_entropy)
    print(f"{args.items} training items of {args.item_ms:g} ms each (+{args.items // 5} validation), small MLP, "
          f"{args.epochs} epochs x {args.repeats} rounds, torch {torch.__version__}")
    rates: dict[int, list[float]] = {0: [], 2: []}
    for repeat in range(args.repeats):
        for workers in ((0, 2) if repeat % 2 == 0 else (2, 0)):
            rates[workers] += run(task, args.epochs, workers)
    zero, two = statistics.median(rates[0]), statistics.median(rates[2])
    print(f"--num-workers 0: {zero:8.0f} samples/s")
    print(f"--num-workers 2: {two:8.0f} samples/s ({two / zero:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
