"""The precision decision: does ``--precision auto`` keep the search's answer? (Issue: decide the default from evidence.)

Runs the pruning benchmark's 16-point grid (``embed_dim:32,64 lr:3e-4,1e-3,3e-3,1e-2
kernel_type:rbf,compact`` on ``synthetic_tokens``) twice through the real CLI, each in a fresh
temporary directory, with ``--pruner none`` so every point finishes:

    hpsearch --models tfn_classifier --param_sweep ... --pruner none --precision fp32|auto

and compares the two runs' final ``val_loss`` per grid point: the Spearman rank correlation
(does ``auto`` rank the configurations as fp32 does?) and the best value's relative gap. The rule
from the issue: make ``auto`` the default only if Spearman >= 0.9 and the best value is within
0.5%; otherwise keep fp32. It also prints each run's wall time and what ``auto`` resolved to.

    python benchmarks/precision_decision.py                      # 20 epochs, 4,000 examples (as the pruning benchmark)
    python benchmarks/precision_decision.py --epochs 6 --dataset-size 2000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import optuna
from optuna.trial import TrialState

GRID = ["embed_dim:32,64", "lr:3e-4,1e-3,3e-3,1e-2", "kernel_type:rbf,compact"]
STUDY = "tfn_classifier-synthetic_tokens"
MIN_SPEARMAN, MAX_GAP = 0.9, 0.005


def run(precision: str, epochs: int, dataset_size: int) -> tuple[dict[tuple, float], float, set[str]]:
    """Final val_loss per grid point, wall seconds, and the precisions the trials recorded."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "hpsearch.search.cli", "--models", "tfn_classifier", "--param_sweep", *GRID,
                   "--pruner", "none", "--precision", precision, "--epochs", str(epochs),
                   "--dataset-size", str(dataset_size), "--output-dir", tmp, "--no-progress"]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp}/hpsearch.db")
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        values = {tuple(sorted((k, v) for k, v in t.params.items())): t.value for t in trials}
        return values, wall, {t.user_attrs.get("precision", "?") for t in trials}


def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    result = [0.0] * len(values)
    for rank, index in enumerate(order):
        result[index] = float(rank)
    return result


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb)) / (n * (n * n - 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--epochs", type=int, default=20, help="epochs per trial (default %(default)s)")
    parser.add_argument("--dataset-size", type=int, default=4000, help="synthetic_tokens examples (default %(default)s)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"16-point grid {' '.join(GRID)}, {args.epochs} epochs, {args.dataset_size} examples, --pruner none")
    fp32, fp32_wall, _ = run("fp32", args.epochs, args.dataset_size)
    auto, auto_wall, resolved = run("auto", args.epochs, args.dataset_size)
    points = sorted(fp32)
    print(f"{'point':<58} {'fp32':>9} {'auto':>9}")
    for point in points:
        print(f"{', '.join(f'{k}={v}' for k, v in point if k != 'model'):<58} {fp32[point]:9.4f} {auto[point]:9.4f}")
    rho = spearman([fp32[p] for p in points], [auto[p] for p in points])
    best_fp32, best_auto = min(fp32.values()), min(auto.values())
    gap = best_auto / best_fp32 - 1
    verdict = rho >= MIN_SPEARMAN and abs(gap) <= MAX_GAP
    print(f"\nauto resolved to {'/'.join(sorted(resolved))}; wall: fp32 {fp32_wall:.0f} s, auto {auto_wall:.0f} s ({auto_wall / fp32_wall:.2f}x)")
    print(f"Spearman (final val_loss, 16 points): {rho:.3f} (needs >= {MIN_SPEARMAN})")
    print(f"best val_loss: fp32 {best_fp32:.4f}, auto {best_auto:.4f} ({100 * gap:+.2f}%, needs within ±{100 * MAX_GAP:.1f}%)")
    print(f"decision: {'make auto the default' if verdict else 'keep fp32 the default'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
