"""Orchestration overhead per trial: hpsearch with a do-nothing trainer beside a bare Optuna loop.

Both sides run the same number of trials with the same number of epochs each, on a fresh SQLite
file per run, with a seeded ``RandomSampler`` drawing ``lr`` on a log scale and the median pruner
(the values are made so that nothing is pruned, so every trial reports every epoch):

* **bare Optuna**: ``optuna.create_study`` on ``sqlite:///FILE`` + ``study.optimize`` of an
  objective that suggests ``lr`` and calls ``trial.report`` + ``trial.should_prune`` per epoch;
* **bare Optuna, hpsearch's storage** (context): the same loop on
  ``hpsearch.storage.StudyDatabase.open_for_search`` (WAL journal, busy timeout, the queued take), which
  separates the storage settings from the rest of the orchestration;
* **hpsearch, no-op trainer**: ``Orchestrator.run()`` on a ``StudySpec`` (``tfn_classifier``,
  ``lr:1e-4..1e-2:log``, random sampler, median pruner, ``precision = fp32``) with ``hpsearch.trainers.trainer.Trainer``
  replaced by a stub whose ``fit()`` only calls the callbacks with synthetic ``EpochRecord``\\ s.
  So everything around training runs for real: queueing the trials, the heartbeat, the sweep's
  suggest, building the model, the per-epoch ``hpsearch_epoch_metrics`` row, ``trial.report`` +
  ``should_prune``, the epoch line (to a no-op echo), the FLOPs meter's (empty) statistics and
  every user attribute;
* **hpsearch, no-op trainer + FLOPs meter** (context): the stub also shows the meter one training
  and one validation batch per epoch, so the meter traces the model once per input shape, as it
  does in a real search: once for all trials here, whose sweep changes ``lr`` only (a sweep over
  the model's hyperparameters traces once per set of them; the cost grows with the model).

The sides alternate (the order rotates every round); each figure is total run time / trials,
median over rounds. Prints ms per trial and hpsearch's difference to the bare loop.

    python benchmarks/orchestration_overhead.py             # 40 trials x 5 epochs, 3 rounds
    python benchmarks/orchestration_overhead.py --quick     # 10 trials x 3 epochs, 1 round
    python benchmarks/orchestration_overhead.py --trials 100 --epochs 10 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch

import hpsearch.trainers.trainer as trainer_module
from hpsearch.search.orchestrator import Orchestrator
from hpsearch.search.resolved import resolve
from hpsearch.search.spec import StudySpec
from hpsearch.storage.database import StudyDatabase
from hpsearch.trainers.records import EpochRecord
from hpsearch.trainers.trainer import FitResult


def synthetic_value(trial_index: int, epoch: int) -> float:
    """Falls with the epoch and, slightly, with the trial: the median pruner never prunes."""
    return 1.0 / epoch - 1e-6 * trial_index


class NoOpTrainer:
    """Stands in for ``Trainer``: no training; ``fit`` hands synthetic records to the callbacks."""

    observe = False  # set on the class: also show the FLOPs meter one train + one val batch per epoch
    started = 0

    def __init__(
        self, model: torch.nn.Module, task: Any, config: Any, callbacks: Any = (), flops_meter: Any = None,
        hparams: Any = None,
    ) -> None:
        self.model, self.task, self.config = model, task, config
        self.callbacks = list(callbacks)
        self.step_checks: list[Any] = []  # the objective's heartbeat check; no steps run here
        self.flops_meter = flops_meter
        self.precision = "fp32"
        self.device = torch.device("cpu")
        self.checkpoints = None

    def fit(self, resume_from: Any = None) -> FitResult:
        index = NoOpTrainer.started
        NoOpTrainer.started += 1
        records = []
        x_train, x_val = self.task.train[0], self.task.val[0]
        batch = self.config.batch_size
        for epoch in range(1, self.config.epochs + 1):
            if self.observe and self.flops_meter is not None:
                self.flops_meter.observe(x_train[:batch], 1e-3, training=True)
                self.flops_meter.observe(x_val[:batch], 1e-3, training=False)
            value = synthetic_value(index, epoch)
            record = EpochRecord(
                epoch=epoch,
                lr=self.config.lr,
                train_loss=value,
                val_loss=value,
                metrics={"val_acc": 0.5},
                grad_norm_mean=1.0,
                grad_norm_max=2.0,
                epoch_seconds=1e-3,
                samples_per_second=1e6,
            )
            records.append(record)
            for callback in self.callbacks:
                callback(record)
        return FitResult(records=records, precision=self.precision)


def bare_loop(path: Path, n_trials: int, epochs: int, hpsearch_storage: bool) -> float:
    url = f"sqlite:///{path}"
    start = time.perf_counter()
    storage = StudyDatabase.open_for_search(url).storage if hpsearch_storage else optuna.storages.RDBStorage(url)
    study = optuna.create_study(
        study_name="bare",
        storage=storage,
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1),
    )

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        value = 0.0
        for epoch in range(1, epochs + 1):
            value = synthetic_value(trial.number, epoch)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    study.optimize(objective, n_trials=n_trials)
    seconds = time.perf_counter() - start
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == n_trials
    storage.engine.dispose()
    return seconds


def hpsearch_run(workdir: Path, n_trials: int, epochs: int, observe: bool) -> float:
    spec = StudySpec(
        models=("tfn_classifier",),
        sweep=("lr:1e-4..1e-2:log",),
        task_options={"dataset_size": 500},
        # fp32 pinned: auto would time real training steps once per model, training work the bare loop does not do.
        train={"epochs": epochs, "precision": "fp32"},
        sampler="random",
        pruner="median",
        n_trials=n_trials,
        output_dir=str(workdir),
    )
    resolved = resolve(spec)  # builds the task: set-up, not per-trial work, so outside the timing
    NoOpTrainer.observe, NoOpTrainer.started = observe, 0
    # The trial plan imports Trainer from its module when it prepares a run (search/trial.py).
    original = trainer_module.Trainer
    trainer_module.Trainer = NoOpTrainer  # type: ignore[misc,assignment]
    try:
        start = time.perf_counter()
        orchestrator = Orchestrator(resolved, echo=lambda line: None, progress=False)
        outcome = orchestrator.run()
        seconds = time.perf_counter() - start
    finally:
        trainer_module.Trainer = original  # type: ignore[misc]
    trials = outcome.study.get_trials(deepcopy=False)
    assert outcome.trials_run == n_trials and outcome.trials_failed == 0, outcome
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["epochs_run"] == epochs for t in trials)
    assert all("flops.total" in t.user_attrs for t in trials)
    orchestrator.database.close()  # release the SQLite file before its directory goes
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--trials", type=int, default=40, help="trials per run (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=5, help="reports per trial (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default %(default)s)")
    parser.add_argument("--no-meter", action="store_true", help="skip the side with the FLOPs meter's traces")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 trials x 3 epochs, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.repeats = 10, 3, 1
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # as the CLI does

    sides: dict[str, Callable[[Path], float]] = {
        "bare Optuna (RDBStorage on sqlite:///)": lambda d: bare_loop(d / "bare.db", args.trials, args.epochs, False),
        "bare Optuna, hpsearch's storage": lambda d: bare_loop(d / "bare.db", args.trials, args.epochs, True),
        "hpsearch, no-op trainer": lambda d: hpsearch_run(d, args.trials, args.epochs, False),
    }
    if not args.no_meter:
        sides["hpsearch, no-op trainer + FLOPs meter"] = lambda d: hpsearch_run(d, args.trials, args.epochs, True)
    names = list(sides)
    print(f"{args.trials} trials x {args.epochs} epochs per run, a fresh SQLite file each, {args.repeats} rounds")
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: imports, first model build, first trace
        hpsearch_run(Path(tmp), 2, 1, True)
        bare_loop(Path(tmp) / "warm.db", 2, 1, False)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            with tempfile.TemporaryDirectory() as tmp:
                times[name].append(sides[name](Path(tmp)) / args.trials)
        print(
            f"round {repeat + 1}: " + "   ".join(f"{name} {1e3 * times[name][-1]:.1f} ms" for name in names), flush=True
        )

    base = names[0]
    print(f"\nmedian of {args.repeats} rounds, ms per trial ({args.epochs} epochs each)")
    print(f"{'side':<42} {'ms/trial':>9} {'vs bare':>9} {'ratio':>7}")
    for name in names:
        ms = 1e3 * statistics.median(times[name])
        diff = statistics.median(1e3 * (a - b) for a, b in zip(times[name], times[base]))
        ratio = statistics.median(a / b for a, b in zip(times[name], times[base]))
        print(f"{name:<42} {ms:9.1f} {diff:+9.1f} {ratio:6.2f}x")
    ours = times["hpsearch, no-op trainer"]
    same = names[1]
    diff_same = statistics.median(1e3 * (a - b) for a, b in zip(ours, times[same]))
    diff_plain = statistics.median(1e3 * (a - b) for a, b in zip(ours, times[base]))
    print(
        f"\nhpsearch's orchestration: {1e3 * statistics.median(ours):.1f} ms per trial, {diff_same:+.1f} ms over a bare Optuna "
        f"loop on the same storage (hpsearch's SQLite settings, {1e3 * statistics.median(times[same]):.1f} ms) and "
        f"{diff_plain:+.1f} ms over one on Optuna's default SQLite storage ({1e3 * statistics.median(times[base]):.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
