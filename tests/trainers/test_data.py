"""Splits of every kind: tensors, Datasets (map-style and iterable), loader functions; batches of every shape."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from hpsearch.trainers import DataError, StepOutput, Task, TrainConfig, Trainer, seed_everything
from hpsearch.trainers.data import BatchSource, check_split
from hpsearch.trainers.flops import FlopsMeter


def blobs(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    return torch.randn(n, 6, generator=g) + labels[:, None].float(), labels


class Augmented(Dataset):
    """Noise drawn from torch's RNG in __getitem__, as augmentations do."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index] + 0.1 * torch.randn(6), self.y[index]


class Streamed(IterableDataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __iter__(self):
        return iter(zip(self.x, self.y))


class DictData(Dataset):
    """Dict examples: two inputs and a label, for a model taking keyword arguments."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"left": self.x[index, :3], "right": self.x[index, 3:], "label": self.y[index]}


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left, self.right = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return self.left(left) + self.right(right)


def classifier() -> nn.Module:
    seed_everything(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def fit(task: Task, epochs: int = 3, **settings) -> list:
    config = TrainConfig(epochs=epochs, batch_size=16, device="cpu", **settings)
    return Trainer(classifier(), task, config).fit().records


def task_of(train, val, **extra) -> Task:
    return Task(name="blobs", train=train, val=val, loss=F.cross_entropy, **extra)


@pytest.mark.parametrize(
    ("split", "message"),
    [
        (torch.zeros(4, 2), "a single tensor; give a tuple of tensors"),
        ((TensorDataset(torch.zeros(4)), torch.zeros(4)), "give the Dataset itself, not in a tuple"),
        ((torch.zeros(4), [1, 2, 3, 4]), "a tuple split holds whole tensors"),
        ([(torch.zeros(2), 0), (torch.zeros(2), 1)], "a list holding a tuple; a list split holds whole tensors"),
        ((torch.zeros(4), torch.zeros(5)), "different lengths [4, 5]"),
        ("data.csv", "give a tuple of tensors (inputs, targets), a torch.utils.data.Dataset, or a function"),
    ],
)
def test_a_split_of_the_wrong_kind_says_what_is_expected(split, message: str) -> None:
    with pytest.raises(DataError, match=rf"train split.*{re_escape(message)}|{re_escape(message)}"):
        check_split(split, "task t's train split")


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_a_dataset_trains_as_its_tensors_do() -> None:
    x, y = blobs()
    records = fit(task_of(TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:])))
    assert all(math.isfinite(r.train_loss) for r in records)
    assert records[-1].train_loss < records[0].train_loss


def test_augmentations_repeat_with_the_seed_whatever_the_loader_workers() -> None:
    x, y = blobs()
    task = task_of(Augmented(x[:64], y[:64]), Augmented(x[64:], y[64:]))
    alone = [(r.train_loss, r.val_loss) for r in fit(task, num_workers=0)]
    assert alone == [(r.train_loss, r.val_loss) for r in fit(task, num_workers=0)]
    assert alone == [(r.train_loss, r.val_loss) for r in fit(task, num_workers=2)]
    other_seed = [(r.train_loss, r.val_loss) for r in fit(task, seed=1)]
    assert other_seed != alone


def test_a_resumed_dataset_trial_with_loader_workers_repeats_the_uninterrupted_one(tmp_path: Path) -> None:
    x, y = blobs()
    task = task_of(Augmented(x[:64], y[:64]), Augmented(x[64:], y[64:]))
    config = TrainConfig(epochs=4, batch_size=16, device="cpu", num_workers=2)
    whole = Trainer(classifier(), task, config.with_overrides({"checkpoint_dir": str(tmp_path / "a")})).fit().records

    class Stop(Exception):
        pass

    def stop_after_two(record) -> None:
        if record.epoch == 2:
            raise Stop

    first = Trainer(classifier(), task, config.with_overrides({"checkpoint_dir": str(tmp_path / "b")}), [stop_after_two])
    with pytest.raises(Stop):
        first.fit()
    # A fresh process would build everything anew: a fresh model and trainer, the same seed.
    resumed = Trainer(torch.nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)), task, config)
    records = resumed.fit(resume_from=tmp_path / "b" / "last.pt").records
    losses = lambda rs: [(r.epoch, r.train_loss, r.val_loss, r.lr) for r in rs]  # noqa: E731
    assert losses(records) == losses(whole)


def test_iterable_datasets_and_loader_functions_train() -> None:
    x, y = blobs()
    streamed = fit(task_of(Streamed(x[:64], y[:64]), Streamed(x[64:], y[64:])), epochs=1)
    loader = fit(task_of(lambda batch_size: DataLoader(TensorDataset(x[:64], y[:64]), batch_size, shuffle=True),
                         lambda batch_size: DataLoader(TensorDataset(x[64:], y[64:]), batch_size)), epochs=1)
    assert math.isfinite(streamed[0].val_loss) and math.isfinite(loader[0].val_loss)


def test_dict_batches_reach_a_keyword_model_and_its_flops_are_counted() -> None:
    x, y = blobs()
    task = task_of(DictData(x[:64], y[:64]), DictData(x[64:], y[64:]))
    seed_everything(0)
    model = TwoInputs()
    meter = FlopsMeter(model)
    records = Trainer(model, task, TrainConfig(epochs=1, batch_size=16, device="cpu"), flops_meter=meter).fit().records
    stats = meter.stats()
    assert math.isfinite(records[0].val_loss)
    # Two 3x3 linear layers: 2 * (3 * 3) multiply-adds per example, 2 FLOPs each.
    assert stats.per_sample_forward == pytest.approx(2 * 2 * 9)
    assert stats.training_passes == 4 and stats.train_step_total > 0


def test_a_batch_the_default_step_cannot_read_is_one_clear_error() -> None:
    x, y = blobs()
    triples = TensorDataset(x[:64], y[:64], y[:64])
    with pytest.raises(DataError, match=r"a 3-item list.*\(inputs, targets\)"):
        fit(task_of(triples, triples), epochs=1)


def test_a_step_that_returns_no_scalar_loss_is_one_clear_error() -> None:
    x, y = blobs()

    def per_example(model, batch, hparams):
        inputs, targets = batch
        return StepOutput(F.cross_entropy(model(inputs), targets, reduction="none"))

    with pytest.raises(DataError, match=r"the step's loss is \[16\]; a step returns one scalar loss"):
        fit(Task(name="t", train=(x, y), val=(x, y), step=per_example), epochs=1)


def test_the_tensor_fast_path_moves_each_split_once() -> None:
    x, y = blobs()
    source = BatchSource((x, y), 16, torch.device("cpu"), torch.Generator().manual_seed(0), shuffle=True)
    assert source.tensors is not None and len(source) == 6
    seen = torch.cat([batch[1] for batch in source])
    assert sorted(seen.tolist()) == sorted(y.tolist())
