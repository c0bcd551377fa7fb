"""Precision speed: a search's wall time with ``--precision auto`` against ``fp32``, on two workloads.

Each workload is a real ``hpsearch`` subprocess, each run in a fresh temporary directory (its own
``hpsearch.db`` and checkpoints):

* ``seed``: the README's seed command, a Token Field Network sweep::

    hpsearch --models tfn_classifier --param_sweep embed_dim:64,128 kernel_type:rbf,compact \\
        --precision auto|fp32 [--epochs E --dataset-size N]

* ``digits``: a small CNN, ``hpsearch run studies/digits_cnn.toml --precision auto|fp32 [--epochs E]``
  (needs scikit-learn: ``pip install -e ".[examples]"``).

Runs alternate ``auto`` and ``fp32`` (the order flips every pair, so drift in machine load hits
both alike). For each it prints the command's wall time, its CPU time (user + system: other load on a shared
machine stretches wall time far more than CPU time), the summed training time of its trials
(from the study's trial timestamps, without interpreter start-up), the precisions the trials
recorded (user attribute ``precision``), the step speedups ``auto`` measured (``precision.speedup``:
how many times faster the model's steps ran in bf16 than in fp32) and the best value, so the
accuracy cost of a lower precision is visible beside the speed. The figures are medians of
per-pair ratios. The step timing ``auto`` takes is part of the ``auto`` runs' wall time. ``auto`` keeps
its step timings between searches (``trainers.step_speed``): with ``--timings kept`` (the default)
the runs share the user's cache folder, so the first ``auto`` run times the models and stores the
timings and the later ones read them, as a user's later searches do; ``--timings fresh`` gives each
``auto`` run an empty one (the machine's matmul measurement copied in), as a model's first search.

For context it also times a 2048 x 2048 matmul in bf16 and in fp32 on this CPU, and says what the
machine's matmul check (``hpsearch doctor``) says; only where it says bf16 does ``auto`` time each
model's steps (``trainers.step_speed``).

    python benchmarks/precision_speed.py                 # both workloads, their defaults, 3 pairs
    python benchmarks/precision_speed.py --quick         # 2 epochs (seed: 1,000 examples), 2 pairs
    python benchmarks/precision_speed.py --workload digits --epochs 3 --repeats 5
    python benchmarks/precision_speed.py --workload digits --timings fresh   # every auto run times its models
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from hpsearch.storage import trial_id
from hpsearch.trainers.precision import PRECISION_CACHE, cache_dir, precision_choice

SEED_COMMAND = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:64,128", "kernel_type:rbf,compact"]
DIGITS_STUDY = Path(__file__).resolve().parent.parent / "studies" / "digits_cnn.toml"
#: Workload name -> the hpsearch arguments that run it, and the study they write.
WORKLOADS = {
    "seed": (SEED_COMMAND, "tfn_classifier-synthetic_tokens"),
    "digits": (["run", str(DIGITS_STUDY)], "digits_cnn"),
}


@dataclass
class SweepRun:
    wall: float
    cpu: float  # the run's user + system CPU seconds: what other load on the machine inflates least
    training: float
    precisions: set[str]
    speedups: list[float]  # precision.speedup of each trial that has one
    best: float
    best_acc: float


def run_sweep(
    workload: str, precision: str, epochs: int | None, dataset_size: int | None, threads: int | None, fresh: bool = False
) -> SweepRun:
    """One run of ``workload`` in a fresh directory; its wall time and what its study holds.

    ``fresh``: as a first search of the model on this machine, with no step timings kept from earlier runs (the
    machine's matmul measurement is kept, as it is after any earlier search).
    """
    arguments, study_name = WORKLOADS[workload]
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "hpsearch.search.cli", *arguments, "--precision", precision]
        command += ["--output-dir", tmp, "--no-progress"]
        if epochs is not None:
            command += ["--epochs", str(epochs)]
        if dataset_size is not None and workload == "seed":
            command += ["--dataset-size", str(dataset_size)]
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        if fresh:
            cache = Path(tmp) / "cache"
            cache.mkdir()
            if (cache_dir() / PRECISION_CACHE).exists():
                shutil.copy(cache_dir() / PRECISION_CACHE, cache / PRECISION_CACHE)
            env["HPSEARCH_CACHE_DIR"] = str(cache)
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, env=env, check=False)
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp}/hpsearch.db")
        study = optuna.load_study(study_name=study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        training = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
        best_acc = _best_acc(Path(tmp) / "hpsearch.db", trial_id(study.best_trial))
        precisions = {t.user_attrs.get("precision", "?") for t in trials}
        speedups = [t.user_attrs["precision.speedup"] for t in trials if "precision.speedup" in t.user_attrs]
        result = SweepRun(wall, cpu, training, precisions, speedups, study.best_value, best_acc)
        storage.engine.dispose()
        return result


def _best_acc(path: Path, trial_id: int) -> float:
    """The last epoch's val_acc of a trial, from hpsearch_epoch_metrics."""
    import json
    import sqlite3

    with sqlite3.connect(path) as connection:
        row = connection.execute(
            "SELECT task_metrics FROM hpsearch_epoch_metrics WHERE trial_id = ? ORDER BY epoch DESC LIMIT 1",
            (trial_id,),
        ).fetchone()
    return float(json.loads(row[0]).get("val_acc", float("nan"))) if row else float("nan")


def matmul_seconds(dtype: torch.dtype, size: int = 2048, reps: int = 5) -> float:
    """Median seconds of one ``size`` x ``size`` matmul in ``dtype`` (after a warm-up)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--workload", nargs="+", choices=sorted(WORKLOADS), default=["seed", "digits"],
                        help="what to run (default: both)")
    parser.add_argument("--repeats", type=int, default=3, help="auto/fp32 pairs (default %(default)s)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (default: the workload's: seed 5, digits 6)")
    parser.add_argument("--dataset-size", type=int, help="seed: synthetic_tokens examples (default: the CLI's, 4000)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the runs (default: unset, torch's choice)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, seed 1,000 examples, 2 pairs")
    parser.add_argument("--timings", choices=("kept", "fresh"), default="kept",
                        help="auto's step timings: kept between runs in the cache folder, as a user's later searches "
                        "read them (the first auto run stores them), or fresh for every run, as a model's first search "
                        "(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.epochs, args.dataset_size = 2, 2, 1000
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)  # the matmul below, like the runs

    choice = precision_choice(torch.device("cpu"))
    measured = ", ".join(f"{p} {r / 1e9:.0f} GFLOP/s" for p, r in choice.flops_per_second.items())
    then = "auto times each model's steps in fp32 and bf16" if choice.chosen != "fp32" else "auto is fp32, untimed"
    print(f"machine matmul check (hpsearch doctor): {choice.chosen} ({measured}); so {then}")

    # Micro-benchmark for context: alternate the dtypes, median of the per-round ratios.
    ratios, f32_times, b16_times = [], [], []
    for _ in range(5):
        f32_times.append(matmul_seconds(torch.float32))
        b16_times.append(matmul_seconds(torch.bfloat16))
        ratios.append(b16_times[-1] / f32_times[-1])
    flop = 2 * 2048**3
    f32, b16 = statistics.median(f32_times), statistics.median(b16_times)
    print(
        f"2048x2048 matmul, {torch.get_num_threads()} threads: fp32 {1e3 * f32:.1f} ms ({flop / f32 / 1e9:.0f} GFLOP/s), "
        f"bf16 {1e3 * b16:.1f} ms ({flop / b16 / 1e9:.0f} GFLOP/s): bf16/fp32 time {statistics.median(ratios):.2f}x"
    )
    summaries = [run_workload(workload, args) for workload in args.workload]
    print()
    for line in summaries:
        print(line)
    return 0


def run_workload(workload: str, args: argparse.Namespace) -> str:
    """Alternate ``auto`` and ``fp32`` runs of ``workload``; print each pair and the medians, return a summary line."""
    arguments = list(WORKLOADS[workload][0])
    if arguments[0] == "run":
        arguments[1] = os.path.relpath(arguments[1])
    extra = (f" --epochs {args.epochs}" if args.epochs else "") + (
        f" --dataset-size {args.dataset_size}" if args.dataset_size and workload == "seed" else ""
    )
    threads = f"OMP_NUM_THREADS={args.threads} " if args.threads else ""
    print(f"\n{threads}hpsearch {' '.join(arguments)} --precision auto|fp32{extra}   (auto's step timings: {args.timings})")

    runs: dict[str, list[SweepRun]] = {"auto": [], "fp32": []}
    for repeat in range(args.repeats):
        for precision in ("auto", "fp32") if repeat % 2 == 0 else ("fp32", "auto"):
            fresh = precision == "auto" and args.timings == "fresh"
            runs[precision].append(run_sweep(workload, precision, args.epochs, args.dataset_size, args.threads, fresh))
        a, f = runs["auto"][-1], runs["fp32"][-1]
        print(
            f"pair {repeat + 1}: auto ({_ran(a)}) {a.wall:6.1f} s wall, {a.cpu:6.1f} s CPU   "
            f"fp32 {f.wall:6.1f} s wall, {f.cpu:6.1f} s CPU   auto/fp32 wall {a.wall / f.wall:.3f}x, CPU {a.cpu / f.cpu:.3f}x"
        )

    def median_ratio(field: str) -> float:
        return statistics.median(getattr(a, field) / getattr(f, field) for a, f in zip(runs["auto"], runs["fp32"]))

    print(f"median of {args.repeats} pairs")
    print(f"{'precision':<16} {'wall s':>8} {'CPU s':>8} {'training s':>11} {'best value':>11} {'its val_acc':>12}")
    for name, side in runs.items():
        label = f"{name} ({'/'.join(sorted(set().union(*(r.precisions for r in side))))})"
        print(
            f"{label:<16} {statistics.median(r.wall for r in side):8.1f} {statistics.median(r.cpu for r in side):8.1f} "
            f"{statistics.median(r.training for r in side):11.1f} "
            f"{statistics.median(r.best for r in side):11.4f} {statistics.median(r.best_acc for r in side):12.4f}"
        )
    wall, cpu, training = median_ratio("wall"), median_ratio("cpu"), median_ratio("training")
    a_best, f_best = statistics.median(r.best for r in runs["auto"]), statistics.median(r.best for r in runs["fp32"])
    return (
        f"{workload}: --precision auto / fp32 wall time {wall:.3f}x (training time alone {training:.3f}x; CPU time {cpu:.3f}x), "
        f"median of {args.repeats} pairs, step timings {args.timings}; best value {a_best:.4f} vs {f_best:.4f} ({100 * (a_best / f_best - 1):+.1f}%)"
    )


def _ran(run: SweepRun) -> str:
    """What an auto run's trials ran in, and the step speedups it measured: ``bf16/fp32, steps 1.31x 0.95x``."""
    ran = "/".join(sorted(run.precisions))
    return f"{ran}, steps {' '.join(f'{x:.2f}x' for x in run.speedups)}" if run.speedups else f"{ran}, untimed"


if __name__ == "__main__":
    sys.exit(main())
