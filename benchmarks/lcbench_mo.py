"""Pruning a multi-objective search: the Pareto pruner on lcbench, accuracy against training time.

Two objectives on YAHPO Gym's lcbench surrogate: maximize ``val_accuracy`` and minimize
``time``, the simulated seconds the trial trained (the sum of its epochs' times; for a trial
that ran all 52 epochs, lcbench's time to train it). Instances 167168, 189873 and 189906, the
budget of benchmarks/lcbench.py (6,544 epochs per run), 30 seeds by default. Each run goes
through ``hpsearch simulate``'s simulation (``CurveSimulation``: the search's sampler and
pruner factories, trial recording and the Pareto pruner a real search uses), once with
``--pruner pareto`` and once with ``--pruner none``, with the same sampler and seed.

Hypervolume, at 25%, 50% and 100% of the budget (epochs trained), of the trials that ran all
52 epochs by then (those a user's ``study.best_trials`` holds). Both objectives are normalized
to [0, 1], lower is better: accuracy as regret, ``(max - acc) / (max - min)`` with the
instance's min and max ``val_accuracy`` from YAHPO's ``global_statistics`` (as
benchmarks/lcbench.py); time as ``time / T``, with T the instance's max ``time`` in
``global_statistics`` (a fixed reference: 1,216 s, 33,482 s and 2,008 s). The reference point
is (1, 1): the worst accuracy YAHPO saw, trained for its longest time. 1.0 is the most there is.

Goal: with pruning at 50% of the budget, at least the hypervolume without pruning at 100%.

``--bound`` adds a third side, ``knows-end``: the pareto pruner's rule (a complete trial dominates
the trial's end, judged at the same rungs) with each trial's true end, read from the surrogate, in
place of the optimistic guess. No pruner that guesses does better at pruning by that rule, so it
says how much of a shortfall a better guess could close.

The sampler is TPE unless ``--sampler`` says otherwise: the default sampler, GP, fits a model per
objective, about 50 s a run on one thread against 1 s for TPE, so 30 seeds of it take hours on
two cores; a few seeds show where it stands.

    python benchmarks/lcbench_mo.py --data ../shared/yahpo_data --seeds 30 --jobs 2
    python benchmarks/lcbench_mo.py --data ../shared/yahpo_data --seeds 3 --jobs 2 --sampler gp
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

# One BLAS thread per process, set before numpy loads: each --jobs process runs on a core of its own,
# and a BLAS pool per process oversubscribes them (a GP run took three times as long).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import optuna
from lcbench import FRACTIONS, INSTANCES  # this folder's single-objective benchmark

from hpsearch.search.goals import TIME_OBJECTIVE, Goal
from hpsearch.search.pareto import ParetoPruner
from hpsearch.search.simulate import LCBENCH_BUDGET, CurveSimulation, FinishedTrial, epoch_seconds, load_benchmark
from hpsearch.trainers.lcbench import EPOCHS

GOALS = (Goal("val_accuracy", "maximize"), Goal(TIME_OBJECTIVE, "minimize"))
PRUNERS = ("pareto", "none")
KNOWS_END = "knows-end"


class EndKnowingPruner(ParetoPruner):
    """The pareto pruner with each trial's true end from ``surrogate`` in place of its optimistic guess."""

    def __init__(self, pruner: ParetoPruner, surrogate) -> None:
        super().__init__(pruner.goals, sorted(pruner.rungs), pruner.epochs, pruner.quantile, pruner.min_complete)
        self.surrogate = surrogate
        self._judged: optuna.Trial | None = None

    def prune_reason(self, trial, recorder, rows, costs):
        self._judged = trial
        return super().prune_reason(trial, recorder, rows, costs)

    def _optimistic_end(self, own, ends):
        curve = {name: values[0] for name, values in self.surrogate.curves([dict(self._judged.params)]).items()}
        return [curve["val_accuracy"][-1], sum(epoch_seconds(curve, e) for e in range(1, EPOCHS + 1))]


@dataclass(frozen=True)
class Run:
    pruner: str
    instance: str
    seed: int
    hypervolume: dict[float, float]  # fraction of the budget -> normalized hypervolume
    trials: int
    pruned: int
    seconds: float


def hypervolume_2d(points: np.ndarray, reference: tuple[float, float] = (1.0, 1.0)) -> float:
    """The area dominated by ``points`` (n × 2, both minimized) and bounded by ``reference``."""
    inside = points[(points < np.asarray(reference)).all(axis=1)]
    area, best_y = 0.0, reference[1]
    for x, y in inside[np.argsort(inside[:, 0], kind="stable")]:
        if y < best_y:  # a step of the front's staircase, from x to the reference's x
            area += (reference[0] - x) * (best_y - y)
            best_y = y
    return area


def hypervolumes(finished: list[FinishedTrial], accuracy: tuple[float, float], time_reference: float) -> dict[float, float]:
    """The normalized hypervolume of the complete trials at each fraction of the budget (trials in the order they ended)."""
    low, high = accuracy
    out = {}
    for fraction in FRACTIONS:
        done = [t.values for t in finished if t.values and t.spent <= fraction * LCBENCH_BUDGET]
        points = np.array([[(high - acc) / (high - low), seconds / time_reference] for acc, seconds in done])
        out[fraction] = hypervolume_2d(points.reshape(-1, 2))
    return out


def run_one(data: str, instance: str, seed: int, sampler: str, bound: bool) -> list[Run]:
    import torch  # the GP sampler's model

    # One thread per job, as benchmarks/lcbench.py: --jobs processes share the cores.
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    surrogate = load_benchmark("lcbench", instance, data)
    accuracy, time_reference = surrogate.target_range("val_accuracy"), surrogate.target_range("time")[1]
    runs = []
    for pruner in PRUNERS + ((KNOWS_END,) if bound else ()):
        started = time.perf_counter()
        simulation = CurveSimulation(surrogate, sampler, "pareto" if pruner == KNOWS_END else pruner, seed=seed, objectives=GOALS)
        if pruner == KNOWS_END:
            simulation.pareto = EndKnowingPruner(simulation.pareto, surrogate)
        result = simulation.run()
        pruned = sum(t.value is None for t in result.finished)
        runs.append(
            Run(pruner, instance, seed, hypervolumes(result.finished, accuracy, time_reference),
                len(result.finished), pruned, time.perf_counter() - started)
        )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("HPSEARCH_YAHPO_DATA", "../shared/yahpo_data"))
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds FIRST..FIRST+SEEDS-1 (default: 0)")
    parser.add_argument("--instances", nargs="+", default=list(INSTANCES))
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bound", action="store_true", help=f"also run {KNOWS_END}: the pareto rule given each trial's true end")
    args = parser.parse_args()
    sides = PRUNERS + ((KNOWS_END,) if args.bound else ())
    load_benchmark("lcbench", args.instances[0], args.data)  # a wrong folder stops here, not in every job

    print(
        f"lcbench multi-objective (maximize val_accuracy, minimize time), seeds {args.first_seed}.."
        f"{args.first_seed + args.seeds - 1}, budget "
        f"{LCBENCH_BUDGET} epochs, --sampler {args.sampler}; normalized hypervolume, reference point (1, 1)"
    )
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        jobs = [
            pool.submit(run_one, args.data, instance, seed, args.sampler, args.bound)
            for instance in args.instances
            for seed in range(args.first_seed, args.first_seed + args.seeds)
        ]
        runs = [run for job in jobs for run in job.result()]
    print(f"({time.perf_counter() - started:.0f} s)\n")

    def mine(pruner: str, instance: str) -> list[Run]:
        return [r for r in runs if r.pruner == pruner and r.instance == instance]

    def mean_hv(pruner: str, instance: str, fraction: float) -> float:
        return statistics.fmean(r.hypervolume[fraction] for r in mine(pruner, instance))

    print(f"{'instance':>9} {'pruner':>9} " + " ".join(f"{f'{f:.0%}':>8}" for f in FRACTIONS)
          + f" {'trials':>7} {'pruned':>7} {'s/run':>6}")
    for instance in args.instances:
        for pruner in sides:
            cells = " ".join(f"{mean_hv(pruner, instance, f):>8.4f}" for f in FRACTIONS)
            group = mine(pruner, instance)
            print(
                f"{instance:>9} {pruner:>9} {cells} {statistics.fmean(r.trials for r in group):>7.0f} "
                f"{statistics.fmean(r.pruned for r in group):>7.0f} {statistics.fmean(r.seconds for r in group):>6.2f}"
            )
    print("\ngoal: the hypervolume with pruning at 50% of the budget >= without pruning at 100%")
    for pruner in (side for side in sides if side != "none"):
        for instance in args.instances:
            half, full = mean_hv(pruner, instance, 0.5), mean_hv("none", instance, 1.0)
            wins = sum(p.hypervolume[0.5] >= n.hypervolume[1.0]
                       for p in mine(pruner, instance) for n in mine("none", instance) if p.seed == n.seed)
            print(f"  {pruner} {instance}: {half:.4f} vs {full:.4f}: {'met' if half >= full else 'NOT met'} "
                  f"(per seed: met in {wins} of {len(mine(pruner, instance))})")


if __name__ == "__main__":
    main()
