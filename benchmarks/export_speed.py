"""Export speed: ``hpsearch.storage`` against Optuna's own ``trials_dataframe()``.

Builds (once, cached under ``benchmarks/.cache/``) a SQLite study of 10,000 trials with four
parameters (one categorical), a dozen user attributes, ten intermediate values per trial and
100,000 rows in ``hpsearch_epoch_metrics``, then times on that file, each run from a cold start
(a fresh ``load_study`` for Optuna, a fresh engine for hpsearch):

* ``optuna.load_study(...).trials_dataframe()``
* ``hpsearch.storage.trials_frame`` (the same frame; the script checks it is equal)
* ``hpsearch.storage.epochs_frame``
* ``hpsearch.storage.export_study`` (both files) in each format

and prints the medians side by side with the speed-up over ``trials_dataframe()``.

    python benchmarks/export_speed.py                 # 10,000 trials, 3 runs each
    python benchmarks/export_speed.py --trials 1000   # a quick look (cached separately)
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpsearch.storage.database import StudyDatabase
from hpsearch.storage.epoch_metrics import EpochMetricsTable
from hpsearch.storage.export import epochs_frame, export_study, trials_frame
from hpsearch.trainers.records import EpochRecord

CACHE = Path(__file__).resolve().parent / ".cache"
STUDY = "export-speed"
EPOCHS = 10
# Bump when the study's shape changes, so an old cache is not reused.
LAYOUT_VERSION = 1
DISTRIBUTIONS = {
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "embed_dim": IntDistribution(32, 256, step=32),
    "kernel_type": CategoricalDistribution(["rbf", "compact", "linear"]),
    "dropout": FloatDistribution(0.0, 0.5),
}


def make_trial(number: int, rng: random.Random) -> tuple[optuna.trial.FrozenTrial, list[EpochRecord]]:
    """A trial like an hpsearch run leaves: params, user attrs, one intermediate value per epoch."""
    params = {
        "lr": 10 ** rng.uniform(-5, -1),
        "embed_dim": rng.choice(range(32, 257, 32)),
        "kernel_type": rng.choice(["rbf", "compact", "linear"]),
        "dropout": rng.uniform(0, 0.5),
    }
    pruned = number % 5 == 4  # every fifth trial pruned after its last reported epoch
    records = []
    for epoch in range(1, EPOCHS + 1):
        loss = 2.0 / (1 + epoch * params["lr"] * 100) + rng.random() * 0.05
        records.append(
            EpochRecord(
                epoch=epoch,
                lr=params["lr"] * (1 - epoch / (EPOCHS + 1)),
                train_loss=loss * 0.9,
                val_loss=loss,
                metrics={"val_acc": 1 - loss / 2},
                grad_norm_mean=rng.random(),
                grad_norm_max=rng.random() * 3,
                nonfinite_steps=0,
                clipped_steps=rng.randrange(5),
                epoch_seconds=rng.uniform(1, 3),
                samples_per_second=rng.uniform(1e3, 5e3),
                peak_memory_bytes=rng.randrange(1 << 30),
            )
        )
    flops = params["embed_dim"] * 1e7
    user_attrs = {
        "flops.total": flops * 3000,
        "flops.avg_per_pass": flops,
        "flops.forward_passes": 3000,
        "flops.avg_time_per_pass_s": rng.uniform(1e-3, 1e-2),
        "flops.per_second": flops / 5e-3,
        "flops.std": 0.0,
        "flops.min": flops,
        "flops.max": flops,
        "flops.per_sample_forward": flops / 32,
        "params.count": params["embed_dim"] * 5000,
        "lr_history": [r.lr for r in records],
        "epochs_run": EPOCHS,
        "checkpoint": f"checkpoints/trial-{number}.pt",
    }
    if pruned:
        user_attrs["prune_reason"] = "median pruner"
    trial = create_trial(
        state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
        value=None if pruned else records[-1].val_loss,
        params=params,
        distributions=DISTRIBUTIONS,
        user_attrs=user_attrs,
        intermediate_values={r.epoch: r.val_loss for r in records},
    )
    return trial, records


def build_study(path: Path, n_trials: int) -> None:
    """Write the benchmark study to ``path`` (through a temporary file, so a crash caches nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.db")
    partial.unlink(missing_ok=True)
    url = f"sqlite:///{partial}"
    rng = random.Random(0)
    trials, records = zip(*(make_trial(number, rng) for number in range(n_trials)))
    started = time.perf_counter()
    storage = StudyDatabase.open_for_search(url).storage
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="minimize")
    for start in range(0, n_trials, 1000):
        study.add_trials(trials[start : start + 1000])
        print(f"  added {min(start + 1000, n_trials):,} / {n_trials:,} trials", file=sys.stderr)
    storage.engine.dispose()
    engine = StudyDatabase.open_for_search(url).engine
    with engine.connect() as connection:
        ids = dict(pd.read_sql("SELECT number, trial_id FROM trials", connection).itertuples(index=False))
    engine.dispose()
    with EpochMetricsTable(url) as table:
        table.write_many((ids[number], record.as_row()) for number, rows in enumerate(records) for record in rows)
    print(f"  built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    partial.rename(path)


def median_time(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    """The median wall time of ``repeats`` calls, and the last call's result."""
    times = []
    result = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--trials", type=int, default=10_000, help="trials in the study (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each reader (default %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="build the cached study again")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    path = CACHE / f"export_speed-v{LAYOUT_VERSION}-{args.trials}.db"
    if args.rebuild:
        path.unlink(missing_ok=True)
    if not path.exists():
        print(f"building {path} (a minute or two for 10,000 trials; cached afterwards)", file=sys.stderr)
        build_study(path, args.trials)
    url = f"sqlite:///{path}"

    def optuna_frame() -> pd.DataFrame:
        return optuna.load_study(study_name=STUDY, storage=StudyDatabase.open_for_search(url).storage).trials_dataframe()

    baseline, expected = median_time(optuna_frame, args.repeats)
    rows: list[tuple[str, float]] = [("optuna load_study + trials_dataframe()", baseline)]
    ours, frame = median_time(lambda: trials_frame(url, STUDY), args.repeats)
    pd.testing.assert_frame_equal(frame, expected)  # the speed-up is for the same frame
    rows.append(("hpsearch trials_frame()", ours))
    seconds, epochs = median_time(lambda: epochs_frame(url, STUDY), args.repeats)
    rows.append(("hpsearch epochs_frame()", seconds))
    with tempfile.TemporaryDirectory() as out:
        for fmt in ("csv", "parquet", "json"):
            seconds, _ = median_time(lambda: export_study(url, STUDY, fmt, out), args.repeats)
            rows.append((f"hpsearch export_study({fmt!r}), both files", seconds))

    print(f"study: {len(frame):,} trials, {len(epochs):,} epoch rows, SQLite {path.stat().st_size / 2**20:.0f} MiB")
    print(f"median of {args.repeats} runs, each from a cold start\n")
    width = max(len(name) for name, _ in rows)
    print(f"{'reader':<{width}}  {'seconds':>8}  {'vs trials_dataframe':>19}")
    for name, seconds in rows:
        ratio = baseline / seconds if seconds > 0 else math.inf
        print(f"{name:<{width}}  {seconds:8.3f}  {ratio:18.1f}x")
    speedup = baseline / ours
    verdict = "meets" if speedup >= 5 else "MISSES"
    print(f"\ntrials_frame() is {speedup:.1f}x faster than trials_dataframe() ({verdict} the 5x target)")
    return 0 if speedup >= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
