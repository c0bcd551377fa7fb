"""Dataset path overhead: the trainer on a ``Dataset`` against a hand-written ``DataLoader`` loop.

Both sides train ``tfn_classifier`` (defaults) on the same map-style Dataset of
``synthetic_tokens`` examples (one ``(tokens, label)`` pair per ``__getitem__``), with the same
seed, batch size, AdamW settings (weight decay on matrices only), warmup + cosine LR set every
step, gradient clipping and a validation pass every epoch, ``num_workers=0``:

* **hand loop**: ``DataLoader(dataset, batch_size, shuffle=True, generator=...)`` and about
  thirty lines of plain PyTorch (``hand_loop``);
* **trainer, tracked**: ``Trainer`` on ``Task(train=dataset, ...)`` with a ``FlopsMeter``,
  checkpoints every epoch in a temporary directory and a callback writing the epoch's row to
  ``hpsearch_epoch_metrics`` in a real SQLite file, as a trial does.

The trainer shuffles with its own seeded sampler and seeds torch's CPU RNG before each item,
so the batches differ from the hand loop's: the losses are not compared, only the time. Sides
alternate in rotating order, one round = one run of each; the figure is the median of per-round
ratios. Goal: trainer / hand loop <= 1.05.

    python benchmarks/dataset_overhead.py               # 3 epochs, 5 rounds
    python benchmarks/dataset_overhead.py --quick       # 1 epoch, 2 rounds, 1,000 examples
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from hpsearch.models import build_model
from hpsearch.storage.epoch_metrics import EpochMetricsTable
from hpsearch.trainers import Task, TrainConfig, Trainer, build_task, seed_everything
from hpsearch.trainers.flops import FlopsMeter

GOAL = 1.05
MODEL = "tfn_classifier"


class Examples(Dataset):
    """``(tokens, label)`` pairs read one at a time, as a Dataset over files or rows would give them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


def hand_loop(train: Dataset, val: Dataset, data, config: TrainConfig) -> float:
    seed_everything(config.seed)
    model = build_model(MODEL, {}, data)
    start = time.perf_counter()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    loader = DataLoader(train, config.batch_size, shuffle=True, generator=torch.Generator().manual_seed(config.seed))
    val_loader = DataLoader(val, config.batch_size)
    steps = math.ceil(len(train) / config.batch_size)
    total, warmup, step = config.epochs * steps, round(config.warmup_epochs * steps), 0
    for _ in range(config.epochs):
        model.train()
        for xb, yb in loader:
            if step < warmup:
                lr = config.lr * (step + 1) / warmup
            else:
                progress = min(1.0, (step - warmup) / max(1, total - warmup))
                lr = 0.5 * config.lr * (1 + math.cos(math.pi * progress))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(model(xb).float(), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
            step += 1
        model.eval()
        with torch.no_grad():
            for xb, yb in val_loader:
                F.cross_entropy(model(xb).float(), yb).item()
    return time.perf_counter() - start


def trainer_run(task: Task, config: TrainConfig, workdir: Path, run_id: int) -> float:
    seed_everything(config.seed)
    model = build_model(MODEL, {}, task.data)
    table = EpochMetricsTable(f"sqlite:///{workdir / 'epochs.db'}")
    start = time.perf_counter()
    config = config.with_overrides({"checkpoint_dir": str(workdir / f"ckpt-{run_id}")})
    meter = FlopsMeter(model)
    Trainer(model, task, config, [lambda record: table.write(run_id, record.as_row())], meter).fit()
    meter.stats().as_user_attrs()
    seconds = time.perf_counter() - start
    table.close()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=5, help="rounds (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default %(default)s)")
    parser.add_argument("--dataset-size", type=int, default=3000, help="synthetic_tokens examples (default %(default)s)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, 2 rounds, 1,000 examples")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.epochs, args.dataset_size = 2, 1, 1000
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    tensors = build_task("synthetic_tokens", {"dataset_size": args.dataset_size})
    train, val = Examples(*tensors.train), Examples(*tensors.val)
    task = Task(name="dataset", train=train, val=val, loss=F.cross_entropy, data=tensors.data)
    # Pinned: the hand loop trains in fp32, and the default precision (auto) may pick bf16.
    config = TrainConfig(epochs=args.epochs, device="cpu", precision="fp32")
    print(f"{MODEL} on a Dataset of {args.dataset_size} synthetic_tokens examples, {args.epochs} epochs, "
          f"batch {config.batch_size}, fp32 on both sides, num_workers 0, torch {torch.__version__}, {torch.get_num_threads()} threads")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        hand_loop(train, val, tensors.data, config.with_overrides({"epochs": 1}))  # first-use warm-up, untimed
        trainer_run(task, config.with_overrides({"epochs": 1}), Path(tmp), 0)  # the jit tracer's warm-up
        for repeat in range(args.repeats):
            order = ("hand", "trainer") if repeat % 2 == 0 else ("trainer", "hand")
            seconds = {}
            for side in order:
                seconds[side] = hand_loop(train, val, tensors.data, config) if side == "hand" else trainer_run(task, config, Path(tmp), repeat + 1)
            ratios.append(seconds["trainer"] / seconds["hand"])
            print(f"round {repeat + 1}: hand loop {seconds['hand']:.2f} s, trainer {seconds['trainer']:.2f} s ({ratios[-1]:.3f}x)")
    median = statistics.median(ratios)
    print(f"\nDataset path, trainer / hand DataLoader loop: {median:.3f}x median of {args.repeats} rounds "
          f"({'meets' if median <= GOAL else 'MISSES'} the <= {GOAL}x goal)")
    return 0 if median <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
