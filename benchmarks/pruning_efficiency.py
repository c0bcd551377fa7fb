"""Search efficiency of pruning: a 16-point grid on the default task, in full and pruned.

Runs the real CLI, each run in a fresh temporary directory, on the same grid (default
``embed_dim:32,64 lr:3e-4,1e-3,3e-3,1e-2 kernel_type:rbf,compact``, 16 points, on
``synthetic_tokens``)::

    hpsearch --models tfn_classifier --param_sweep ... --epochs 20 --pruner P

with ``P`` = ``none`` (the full grid) and ``auto`` (the default: ``halving`` for a grid of 9 points
or more), and prints for each the epochs trained (the sum of the trials' ``epochs_run`` user
attributes, less the epochs a resumed trial took over from the one it resumes), the best value found
(``study.best_value``: the best finished trial's last-epoch ``val_loss``) and its gap to the
full grid's best. Goal (issue 19): over the replayed grid orders, the default pruner spends at
most 25% of the full grid's epochs (the median order) and keeps the full grid's best, within
0.5%, in at least 95% of them.

The script also prints a floor: a pruner that judges each trial as it runs has nothing to judge
the first trial of an order against, and must let the best run every epoch, so in all but the
orders that start with the best it spends at least two full trials plus the first judged epoch
of every other. ``halving`` is not bound by it: its points wait at each rung for the others
(``search/halving.py``), so what it spends and keeps is the same in every order.

Pruning decisions depend only on the values reported, and a seeded trial computes the same
values whether or not it is later pruned. So the full run's learning curves also let the
script *replay* the grid, in the same order, against other pruner settings without training
again (a fresh in-memory study, ``report`` + ``should_prune`` per epoch but the last, as the
objective does; ``halving`` through ``hpsearch replay``'s code, which runs the points that go on
past a rung from where they waited). The replay of each real pruned run is checked against it. The CLI runs a grid
in a random order seeded by ``--seed`` (as ``GridSampler`` does), so the script also replays
many other orders: one order meeting the goal could be luck.

    python benchmarks/pruning_efficiency.py              # 16 points x 20 epochs, the default task (4,000 examples)
    python benchmarks/pruning_efficiency.py --quick      # 16 points x 3 epochs, 500 examples
    python benchmarks/pruning_efficiency.py --epochs 10 --threads 1 --pruners none,auto,percentile,sha
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from hpsearch.search.samplers import auto_pruner, first_judged_epoch, make_pruner
from hpsearch.trainers.config import TrainConfig

GRID = ["embed_dim:32,64", "lr:3e-4,1e-3,3e-3,1e-2", "kernel_type:rbf,compact"]
STUDY = "tfn_classifier-synthetic_tokens"
MAX_GAP = 0.005
MAX_SHARE = 0.25
MIN_KEPT = 0.95  # share of the replayed orders that keep the full grid's best


@dataclass
class Search:
    """What one search spent and found."""

    epochs: int
    best: float
    complete: int
    pruned: int
    failed: int = 0
    wall: float = 0.0
    curves: list[tuple[list[float], bool]] = field(default_factory=list)  # (values per epoch, pruned)
    best_params: dict = field(default_factory=dict)

    def gap(self, full: Search) -> float:
        return (self.best - full.best) / abs(full.best)


def run_cli(pruner: str, sweep: list[str], epochs: int, dataset_size: int, threads: int | None) -> Search:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "hpsearch.search.cli", "--models", "tfn_classifier", "--param_sweep", *sweep]
        command += ["--epochs", str(epochs), "--dataset-size", str(dataset_size), "--pruner", pruner]
        command += ["--output-dir", tmp, "--no-progress"]
        start = time.perf_counter()
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - start
        if done.returncode not in (0, 1):
            sys.exit(f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp}/hpsearch.db")
        study = optuna.load_study(study_name=STUDY, storage=storage)
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = min(complete, key=lambda t: t.value) if complete else None
        search = Search(
            epochs=sum(int(t.user_attrs.get("epochs_run", 0)) - int(t.user_attrs.get("resumed_from", {}).get("epoch", 0))
                       for t in trials),
            best=best.value if best else math.inf,
            complete=len(complete),
            # Under halving a point that waited at a rung and went on is one point, not a pruned trial per rung.
            pruned=len({tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.PRUNED}
                       - {tuple(sorted(t.params.items())) for t in complete}),
            failed=sum(t.state == TrialState.FAIL for t in trials),
            wall=wall,
            curves=[
                ([t.intermediate_values[e] for e in sorted(t.intermediate_values)], t.state == TrialState.PRUNED)
                for t in trials
            ],
            best_params={k: v for k, v in best.params.items() if k != "model"} if best else {},
        )
        storage.engine.dispose()
        return search


def replay(full: Search, pruner: optuna.pruners.BasePruner, epochs: int) -> Search:
    """The grid searched again with ``pruner``, from the full run's learning curves."""
    study = optuna.create_study(study_name=STUDY, direction="minimize", pruner=pruner)
    spent, best, complete, pruned = 0, math.inf, 0, 0
    for values, stopped in full.curves:
        trial = study.ask()
        cut = False
        for epoch, value in enumerate(values, start=1):
            trial.report(value, epoch)
            spent += 1
            if epoch < epochs and trial.should_prune():  # as the objective: never after the last epoch
                cut = True
                break
        if cut or stopped or len(values) < epochs:  # stopped: the divergence guard pruned it in the full run too
            study.tell(trial, state=TrialState.PRUNED)
            pruned += 1
        else:
            study.tell(trial, values[-1])
            complete += 1
            best = min(best, values[-1])
    return Search(spent, best, complete, pruned)


def replay_rounds(full: Search, pruner: str, epochs: int) -> Search:
    """The grid searched again under a pruner that pauses points at rungs (``halving``), through ``hpsearch replay``'s code."""
    from hpsearch.search.replay import StoredCurves
    from hpsearch.search.replay import replay as replay_study

    stored = StoredCurves("val_loss", "minimize", epochs, TrainConfig.warmup_epochs, tuple(tuple(c) for c, _ in full.curves))
    result = replay_study(stored, pruner)
    return Search(result.epochs, result.best, len(full.curves) - result.pruned, result.pruned)


Replayer = Callable[[], optuna.pruners.BasePruner] | str  # a pruner's factory, or the name of one that pauses points


def replayed(full: Search, how: Replayer, epochs: int) -> Search:
    return replay_rounds(full, how, epochs) if isinstance(how, str) else replay(full, how(), epochs)


def random_orders(full: Search, factory: Replayer, epochs: int, n: int) -> tuple[float, float, float]:
    """Replays over ``n`` random grid orders: median epoch share, share of orders that keep the
    full grid's best (within the goal's gap), and share of orders that meet the whole goal."""
    rng = random.Random(0)
    shares, kept, met = [], 0, 0
    for _ in range(n):
        curves = full.curves[:]
        rng.shuffle(curves)
        search = replayed(Search(full.epochs, full.best, 0, 0, curves=curves), factory, epochs)
        share = search.epochs / full.epochs
        shares.append(share)
        kept += search.gap(full) <= MAX_GAP
        met += search.gap(full) <= MAX_GAP and share <= MAX_SHARE
    return statistics.median(shares), kept / n, met / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--epochs", type=int, default=20, help="epochs per trial (default %(default)s)")
    parser.add_argument(
        "--dataset-size", type=int, default=4000, help="synthetic_tokens examples (default %(default)s)"
    )
    parser.add_argument("--sweep", nargs="+", default=GRID, metavar="ITEM", help="grid items (default: %(default)s)")
    parser.add_argument(
        "--pruners", default="none,auto", help="real CLI runs; 'none' is required (default %(default)s)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="OMP_NUM_THREADS for the runs (default: unset, torch's choice); "
        "1 makes wall times steadier on a loaded machine, and changes nothing else",
    )
    parser.add_argument("--orders", type=int, default=200, help="random grid orders to replay (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 epochs, 500 examples")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.dataset_size = 3, 500
    # The grid's points, as the CLI counts them: what ``--pruner auto`` chooses by.
    n_grid = math.prod(len(item.split(":", 1)[1].split(",")) for item in args.sweep)
    default_name = auto_pruner("grid", grid_points=n_grid)
    pruners = [default_name if p == "auto" else p for p in args.pruners.split(",") if p]
    if "none" not in pruners:
        pruners.insert(0, "none")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    print(
        f"hpsearch --models tfn_classifier --param_sweep {' '.join(args.sweep)} --epochs {args.epochs} "
        f"--dataset-size {args.dataset_size} --pruner {'|'.join(pruners)}"
    )
    real: dict[str, Search] = {}
    for name in pruners:
        real[name] = run_cli(name, args.sweep, args.epochs, args.dataset_size, args.threads)
        r = real[name]
        print(f"  ran --pruner {name:<10} {r.wall:6.1f} s wall, {r.epochs} epochs, best {r.best:.4f}", flush=True)
    full = real["none"]
    n_points = len(full.curves)
    if full.failed:
        print(f"warning: {full.failed} trial(s) of the full grid failed", file=sys.stderr)

    def row(label: str, search: Search) -> str:
        share = search.epochs / full.epochs
        gap = search.gap(full)
        ok = gap <= MAX_GAP and share <= MAX_SHARE
        return (
            f"{label:<52} {search.complete:>8} {search.pruned:>6} {search.epochs:>6} {100 * share:>6.1f}% "
            f"{search.best:>9.4f} {100 * gap:>+7.2f}%  {'yes' if ok else 'no'}"
        )

    header = f"{'search':<52} {'complete':>8} {'pruned':>6} {'epochs':>6} {'of full':>7} {'best':>9} {'gap':>8}  goal"
    print(
        f"\n{n_points}-point grid x {args.epochs} epochs on synthetic_tokens ({args.dataset_size} examples); "
        f"full grid's best: {full.best:.4f} at {full.best_params}"
    )
    print("real CLI runs")
    print(header)
    for name, search in real.items():
        print(row(f"--pruner {name}" + (" (full grid)" if name == "none" else "") + f", {search.wall:.0f} s", search))

    e = args.epochs
    warmup = TrainConfig.warmup_epochs
    first = first_judged_epoch(e, warmup)
    P = optuna.pruners
    settings: list[tuple[str, Replayer]] = [
        (f"halving (from epoch {first}, a third go on; waits at rungs)", "halving"),
        (f"percentile 25 (2 startup, from epoch {first})", lambda: make_pruner("percentile", e, warmup)),
        (f"median (2 startup, from epoch {first})", lambda: make_pruner("median", e, warmup)),
        (f"sha (from epoch {first}, factor 3)", lambda: make_pruner("sha", e, warmup)),
        (f"hyperband (from epoch {first}, factor 3)", lambda: make_pruner("hyperband", e, warmup)),
        ("percentile 25, 2 startup, from epoch 1", lambda: P.PercentilePruner(25.0, 2, 1)),
        ("median, 4 startup, from epoch 1 (the old default)", lambda: P.MedianPruner(4, 1)),
        ("sha from epoch 1, factor 4 (Optuna's default)", lambda: P.SuccessiveHalvingPruner(min_resource=1)),
        (f"percentile 25, 4 startup, from epoch {first}", lambda: P.PercentilePruner(25.0, 4, first)),
        (f"sha from epoch {first}, factor 4", lambda: P.SuccessiveHalvingPruner(min_resource=first)),
    ]
    print("\nreplayed from the full grid's learning curves (same order, no training)")
    print(header)
    replays: dict[str, Search] = {}
    for label, factory in settings:
        replays[label] = replayed(full, factory, e)
        print(row(label, replays[label]))
    for name, (label, _) in zip(("halving", "percentile", "median", "sha", "hyperband"), settings):
        if name in real:
            same = (real[name].epochs, real[name].complete) == (replays[label].epochs, replays[label].complete)
            print(
                f"replay of --pruner {name} matches its real run: "
                + ("yes" if same else f"NO (real: {real[name].epochs} epochs, {real[name].complete} complete)")
            )

    ordered: dict[str, tuple[float, float, float]] = {}
    if args.orders:
        print(f"\nreplayed over {args.orders} random orders of the same grid (other --seed values order it so)")
        print(f"{'search':<52} {'median epochs':>13} {'best kept':>9} {'goal met':>8}")
        for label, factory in settings:
            share, kept, met = ordered[label] = random_orders(full, factory, e, args.orders)
            print(f"{label:<52} {100 * share:12.1f}% {100 * kept:8.0f}% {100 * met:7.0f}%")

    floor_epochs = 2 * e + (n_points - 2) * first
    print(
        f"\nfloor for any pruner that judges trial by trial from epoch {first}: {100 * floor_epochs / full.epochs:.1f}% "
        f"of the full grid's epochs (the first trial and the best run all {e} epochs, the {n_points - 2} others {first})"
    )
    default_label = next(label for (label, _), name in zip(settings, ("halving", "percentile")) if name == default_name)
    default = real.get(default_name, replays[default_label])
    share, gap = default.epochs / full.epochs, default.gap(full)
    print(
        f"default pruner for this grid ({default_name}), this order: {100 * share:.1f}% of the full grid's epochs, "
        f"best {default.best:.4f} vs {full.best:.4f} ({100 * gap:+.2f}%)"
    )
    if args.orders:
        share, kept, _ = ordered[default_label]
        ok = share <= MAX_SHARE and kept >= MIN_KEPT
        what = f"over {args.orders} orders: median {100 * share:.1f}% of the epochs, best kept in {100 * kept:.1f}%"
    else:
        ok = gap <= MAX_GAP and share <= MAX_SHARE
        what = f"this order only (--orders 0): {100 * share:.1f}% of the epochs, best {'kept' if gap <= MAX_GAP else 'lost'}"
    print(
        f"default pruner {what} (goal: at most {100 * MAX_SHARE:.0f}%, best within {100 * MAX_GAP:.1f}% kept in at "
        f"least {100 * MIN_KEPT:.0f}% of the orders): {'meets' if ok else 'MISSES'} the goal"
    )
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
