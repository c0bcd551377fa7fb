"""Where a trial's batches come from: in-memory tensors, any ``Dataset``, or a ``DataLoader`` factory.

A task's split is one of

* a tuple of tensors of equal length, ``(inputs, targets)`` (or more tensors): the fast path.
  The split moves to the device once and batches are index slices of it;
* a ``torch.utils.data.Dataset``, map-style or iterable: it trains through a ``DataLoader``
  (``num_workers``, pinned memory on CUDA, persistent workers), batch by batch to the device;
* a function ``make_loader(batch_size) -> iterable of batches`` (usually a ``DataLoader``) for
  data that needs its own sampler or collate function.

Shuffling and per-item randomness are seeded, so the same seed gives the same batches and the
same augmentations, with any number of loader workers, and after a resume from a checkpoint:
the tensors' order comes from one seeded generator (saved in checkpoints); a map-style Dataset's
order follows from the seed and the epoch, and before its ``__getitem__`` runs, torch's RNG is
seeded from (seed, epoch, index).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

Split = Union[tuple[Tensor, ...], Dataset, Callable[[int], Iterable[Any]]]

SPLIT_CONTRACT = "a tuple of tensors (inputs, targets), a torch.utils.data.Dataset, or a function batch_size -> DataLoader"


class DataError(ValueError):
    """A split or a batch that hpsearch cannot train on; the message says what is expected."""


def check_split(split: Any, where: str) -> None:
    """Raise ``DataError`` unless ``split`` is one of the three kinds this module takes."""
    if isinstance(split, Tensor):
        raise DataError(f"{where} is a single tensor; give a tuple of tensors such as (inputs, targets)")
    if isinstance(split, (tuple, list)):
        kind = type(split).__name__
        if not split:
            raise DataError(f"{where} is an empty {kind}; give {SPLIT_CONTRACT}")
        for item in split:
            if isinstance(item, Dataset):
                raise DataError(f"{where} is a {kind} holding a {type(item).__name__} (a Dataset); give the Dataset itself, not in a {kind}")
            if not isinstance(item, Tensor):
                raise DataError(
                    f"{where} is a {kind} holding a {type(item).__name__}; a {kind} split holds whole tensors, one per "
                    f"field, such as (inputs, targets); for a list of examples, use a Dataset"
                )
        lengths = {len(t) for t in split}
        if len(lengths) > 1:
            raise DataError(f"{where}: its tensors have different lengths {sorted(lengths)}; each needs one row per example")
        return
    if isinstance(split, Dataset) or callable(split):
        return
    raise DataError(f"{where} is a {type(split).__name__}; give {SPLIT_CONTRACT}")


def is_tensor_split(split: Split) -> bool:
    return isinstance(split, (tuple, list))


def move_to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it (nested tuples, lists and dicts too) on ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch


def batch_length(batch: Any) -> int:
    """The number of examples in ``batch``: the first dimension of its first tensor."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else ()
    for value in values:
        try:
            return batch_length(value)
        except DataError:
            continue
    raise DataError(f"a batch of type {type(batch).__name__} holds no tensor; a batch is a tensor, a tuple or list, or a dict of tensors")


class _EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(item_seed, index)``: a seeded order per epoch, and a seed for each item's randomness.

    Both follow from ``seed`` and the epoch alone (``set_epoch``, as ``DistributedSampler``
    does), not from how often the DataLoader asks for an iterator, so a resumed run and runs
    with any number of workers see the same order and the same augmentations.
    """

    def __init__(self, size: int, seed: int, shuffle: bool) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch = 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch_seed = (self.seed * 1_000_033 + self.epoch) % (2**31 - 1)
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(epoch_seed)).tolist()
        else:
            order = list(range(self.size))
        # Item seeds depend on the epoch and the index alone: not on which worker loads the item.
        return iter([((epoch_seed * 1_000_003 + index) % (2**63 - 1), index) for index in order])


class _SeededItems(Dataset):
    """A map-style Dataset whose ``__getitem__`` runs with torch's RNG seeded for that item."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        seed, index = key
        # The CPU generator alone: torch.manual_seed also queues CUDA's, recording a stack each time.
        torch.default_generator.manual_seed(seed)
        return self.dataset[index]


class BatchSource:
    """The batches of one split for one trial, on the trial's device.

    ``generator`` orders the epochs (and seeds item randomness) when ``shuffle``; the trainer
    saves its state in checkpoints so a resumed trial sees the same batches.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        device: torch.device,
        generator: torch.Generator,
        shuffle: bool,
        num_workers: int = 0,
        where: str = "split",
    ) -> None:
        check_split(split, where)
        self.device, self.batch_size, self.generator, self.shuffle = device, batch_size, generator, shuffle
        self.tensors: tuple[Tensor, ...] | None = None
        self.loader: Iterable[Any] | None = None
        self.sampler: _EpochSampler | None = None
        if is_tensor_split(split):
            # Contiguous once, so batch slices are too: models and metrics may .view() them.
            self.tensors = tuple(t.to(device).contiguous() for t in split)  # type: ignore[union-attr]
        elif isinstance(split, Dataset):
            self.loader = self._dataset_loader(split, num_workers, where)
        else:
            self.loader = split(batch_size)  # type: ignore[operator]
            if not isinstance(self.loader, Iterable):
                raise DataError(f"{where}: the loader function returned a {type(self.loader).__name__}, not an iterable of batches")

    def _dataset_loader(self, dataset: Dataset, num_workers: int, where: str) -> DataLoader:
        options: dict[str, Any] = {
            "batch_size": self.batch_size,
            "num_workers": num_workers,
            "pin_memory": self.device.type == "cuda",
            "persistent_workers": num_workers > 0,
        }
        if isinstance(dataset, IterableDataset):
            # Worker seeds come from this generator, so they repeat with the trial's seed.
            return DataLoader(dataset, generator=self.generator, **options)
        if not hasattr(dataset, "__len__"):
            raise DataError(f"{where}: a map-style Dataset needs __len__")
        seed = int(torch.randint(0, 2**31 - 1, (), generator=self.generator))
        self.sampler = _EpochSampler(len(dataset), seed, self.shuffle)  # type: ignore[arg-type]
        return DataLoader(_SeededItems(dataset), sampler=self.sampler, **options)

    def set_epoch(self, epoch: int) -> None:
        """Which epoch the next pass is: it decides a Dataset's order and its items' random seeds."""
        if self.sampler is not None:
            self.sampler.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch (``DataError`` for an iterable without a length)."""
        if self.tensors is not None:
            return math.ceil(len(self.tensors[0]) / self.batch_size)
        try:
            return len(self.loader)  # type: ignore[arg-type]
        except TypeError:
            raise DataError(
                "an iterable split needs a length (__len__): the LR schedule is planned in steps per epoch"
            ) from None

    def __iter__(self) -> Iterator[Any]:
        if self.tensors is not None:
            count = len(self.tensors[0])
            if self.shuffle:
                indices: Iterable[Tensor] = torch.randperm(count, generator=self.generator).split(self.batch_size)
                for index in indices:
                    index = index.to(self.device)
                    yield tuple(t[index] for t in self.tensors)
            else:
                for start in range(0, count, self.batch_size):
                    yield tuple(t[start : start + self.batch_size] for t in self.tensors)
            return
        for batch in self.loader:  # type: ignore[union-attr]
            yield move_to_device(batch, self.device)
