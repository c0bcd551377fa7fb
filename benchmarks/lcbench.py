"""hpsearch's default search strategy on YAHPO Gym's lcbench surrogate, against published baselines.

The protocol of the YAHPO Gym paper (Pfisterer et al., AutoML-Conf 2022) for lcbench: maximize
``val_accuracy`` on instances 167168, 189873 and 189906, with ceil(20·52 + sqrt(7)·52·40) = 6,544
epochs per run, 30 seeds; the mean normalized regret ``(max - best) / (max - min)`` at 25%, 50%
and 100% of the budget, with each instance's min and max ``val_accuracy`` from YAHPO's
``global_statistics``. ``best`` is the best value of a trial that ran all 52 epochs: what
``study.best_trial`` gives a user. The surrogate can exceed YAHPO's max, so a regret can be
below 0.

Sides, each run with the same seeds:

* **hpsearch default**: ``hpsearch simulate``'s simulation (the search's own sampler and pruner
  factories and trial recording) with the default sampler and pruner, one worker;
* **random search**: Optuna's ``RandomSampler``, every configuration for 52 epochs;
* **optuna baseline**: the paper's: TPE with 5 startup trials and ``MedianPruner``, reporting at
  epochs 2, 6, 17 and 52 only;
* **hpsearch default, 4 workers**: for the parallel figure.

The references run in a bare Optuna ask/tell loop (``simulate.optuna_loop``).

Accounting, both printed:

* **trained**: epochs actually trained; hpsearch continues a trial through its rungs;
* **paper**: each evaluation charged its full epoch count, as if a trial restarted at every rung
  where it was judged: a trial stopped at epoch e is charged the sum of the rungs below e, plus e.
  Rungs: 2, 6, 17 (optuna baseline); the default pruner's decision epochs (hpsearch).

Also printed: the simulated wall time 4 workers take to reach random search's final best against
1 worker's (the median over seeds of each, and per seed), and the wall time of one simulated run
against the same run in a bare Optuna loop (same sampler, pruner and seed).

    python benchmarks/lcbench.py --data ../shared/yahpo_data                 # 30 seeds: each GP run takes 1-4 min of a core
    python benchmarks/lcbench.py --data ../shared/yahpo_data --seeds 5 --jobs 2
    python benchmarks/lcbench.py --data ../shared/yahpo_data --seeds 5 --first-seed 5   # seeds 5..9
    python benchmarks/lcbench.py --data ../shared/yahpo_data --stop-at 0.25             # 30 seeds, hpsearch to 25% only

``--stop-at F`` stops hpsearch's runs at that fraction of the budget (the references still run
whole): the 25% figure and the parallel figure of 30 seeds in a quarter of the time. A seed whose
run stops before it reaches random search's final best counts as slowest.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

# One BLAS thread per process, set before numpy loads: each --jobs process runs on a core of its own,
# and a BLAS pool per process oversubscribes them (a GP run took three times as long).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import optuna

from hpsearch.search.samplers import DEFAULT_PRUNER, DEFAULT_SAMPLER, make_pruner, make_sampler, pruner_rungs
from hpsearch.search.simulate import LCBENCH_BUDGET, CurveSimulation, FinishedTrial, load_benchmark, optuna_loop

INSTANCES = ("167168", "189873", "189906")
FRACTIONS = (0.25, 0.5, 1.0)
OPTUNA_RUNGS = (2, 6, 17, 52)
SIDES = ("hpsearch", "random", "optuna", "hpsearch-4w")


@dataclass(frozen=True)
class Run:
    side: str
    instance: str
    seed: int
    regret: dict[tuple[str, float], float]  # (accounting, fraction) -> normalized regret
    clock_to_target: float | None  # simulated seconds until random search's final best is reached
    seconds: float  # wall time of the run
    trials: int


def paper_cost(epochs: int, rungs: tuple[int, ...]) -> int:
    """Epochs charged when each judged rung is an evaluation of its own: the rungs passed, plus the last epoch."""
    return sum(r for r in rungs if r < epochs) + epochs


def regrets(
    finished: list[FinishedTrial], rungs: tuple[int, ...], low: float, high: float
) -> dict[tuple[str, float], float]:
    """Normalized regret at each fraction of the budget, in both accountings, for trials in the order they ended."""
    out = {}
    for accounting in ("trained", "paper"):
        spent, best, marks = 0, -math.inf, []
        for trial in finished:
            spent = trial.spent if accounting == "trained" else spent + paper_cost(trial.epochs, rungs)
            if trial.value is not None:
                best = max(best, trial.value)
            marks.append((spent, best))
        for fraction in FRACTIONS:
            reached = [b for s, b in marks if s <= fraction * LCBENCH_BUDGET]
            found = reached[-1] if reached else -math.inf
            out[accounting, fraction] = (high - found) / (high - low) if found > -math.inf else 1.0
    return out


def clock_to(finished: list[FinishedTrial], target: float) -> float | None:
    return next((t.clock for t in finished if t.value is not None and t.value >= target), None)


def run_one(data: str, instance: str, seed: int, parallel: bool, stop_at: float = 1.0) -> list[Run]:
    import torch  # the GP sampler's model

    # One thread per job: --jobs processes share the cores, and torch's default of a thread per core oversubscribes them.
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    surrogate = load_benchmark("lcbench", instance, data)
    low, high = surrogate.target_range("val_accuracy")
    runs = []
    started = time.perf_counter()
    random = optuna_loop(
        surrogate, optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner(), LCBENCH_BUDGET
    )
    runs.append(
        Run("random", instance, seed, regrets(random, (), low, high), None, time.perf_counter() - started, len(random))
    )
    target = max(t.value for t in random if t.value is not None)

    started = time.perf_counter()
    baseline = optuna_loop(
        surrogate,
        optuna.samplers.TPESampler(n_startup_trials=5, seed=seed),
        optuna.pruners.MedianPruner(),
        LCBENCH_BUDGET,
        report_at=OPTUNA_RUNGS,
    )
    runs.append(
        Run(
            "optuna",
            instance,
            seed,
            regrets(baseline, OPTUNA_RUNGS[:-1], low, high),
            None,
            time.perf_counter() - started,
            len(baseline),
        )
    )

    rungs = pruner_rungs(DEFAULT_PRUNER, 52, 0, DEFAULT_SAMPLER)
    for side, workers in (("hpsearch", 1), ("hpsearch-4w", 4))[: 2 if parallel else 1]:
        started = time.perf_counter()
        budget = math.ceil(stop_at * LCBENCH_BUDGET)
        result = CurveSimulation(surrogate, DEFAULT_SAMPLER, DEFAULT_PRUNER, seed=seed, workers=workers, budget=budget).run()
        runs.append(
            Run(
                side,
                instance,
                seed,
                regrets(result.finished, rungs, low, high),
                clock_to(result.finished, target),
                time.perf_counter() - started,
                len(result.finished),
            )
        )
    return runs


def speed(data: str, repeats: int) -> tuple[float, float]:
    """Median wall seconds of one default-strategy run: simulated, and as a bare Optuna loop."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    surrogate = load_benchmark("lcbench", INSTANCES[0], data)
    simulated, bare = [], []
    for seed in range(repeats):
        started = time.perf_counter()
        CurveSimulation(surrogate, DEFAULT_SAMPLER, DEFAULT_PRUNER, seed=seed).run()
        simulated.append(time.perf_counter() - started)
        started = time.perf_counter()
        optuna_loop(
            surrogate,
            make_sampler(DEFAULT_SAMPLER, seed),
            make_pruner(DEFAULT_PRUNER, 52, 0, DEFAULT_SAMPLER),
            LCBENCH_BUDGET,
        )
        bare.append(time.perf_counter() - started)
    return statistics.median(simulated), statistics.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("HPSEARCH_YAHPO_DATA", "../shared/yahpo_data"))
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds FIRST..FIRST+SEEDS-1: a long protocol in parts")
    parser.add_argument("--instances", nargs="+", default=list(INSTANCES))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--parallel-seeds", type=int, help="seeds that also run with 4 workers (default: --seeds)")
    parser.add_argument("--stop-at", type=float, default=1.0, choices=FRACTIONS, help="stop hpsearch's runs at this fraction of the budget")
    parser.add_argument("--speed-repeats", type=int, default=3, help="runs timed for the speed figure; 0: none")
    args = parser.parse_args()
    load_benchmark("lcbench", args.instances[0], args.data)  # a wrong folder stops here, not in every job

    print(
        f"lcbench, {args.seeds} seeds, budget {LCBENCH_BUDGET} epochs; default strategy: "
        f"--sampler {DEFAULT_SAMPLER} --pruner {DEFAULT_PRUNER}"
    )
    def ran(side: str, fraction: float) -> bool:
        """Whether ``side``'s runs got to ``fraction`` of the budget (hpsearch's stop at ``--stop-at``)."""
        return not side.startswith("hpsearch") or fraction <= args.stop_at

    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        parallel = args.seeds if args.parallel_seeds is None else args.parallel_seeds
        # Seed by seed, each instance in turn: a protocol stopped part way has whole seeds of every instance.
        jobs = [
            pool.submit(run_one, args.data, instance, seed, seed < args.first_seed + parallel, args.stop_at)
            for seed in range(args.first_seed, args.first_seed + args.seeds)
            for instance in args.instances
        ]
        runs = []
        for job in jobs:
            for run in job.result():
                runs.append(run)
                # One line a run as it ends: what a long protocol has shown so far, should it be stopped.
                print(
                    f"  {run.instance} seed {run.seed:>2} {run.side:>12}: regret (trained) "
                    + " / ".join(f"{run.regret['trained', f]:.4f}" for f in FRACTIONS if ran(run.side, f))
                    + f", {run.trials} trials, {run.seconds:.0f} s",
                    flush=True,
                )
    print(f"({time.perf_counter() - started:.0f} s)\n")

    def mean(side: str, instance: str, key: tuple[str, float]) -> float:
        return statistics.fmean(r.regret[key] for r in runs if r.side == side and r.instance == instance)

    for accounting in ("trained", "paper"):
        print(f"mean normalized regret ({accounting} epochs), and x random search's final regret")
        print(
            f"{'instance':>9} {'side':>12} "
            + " ".join(f"{f'{f:.0%}':>16}" for f in FRACTIONS)
            + f" {'trials':>7} {'s/run':>6}"
        )
        for instance in args.instances:
            random_final = mean("random", instance, (accounting, 1.0))
            for side in SIDES:
                if not any(r.side == side and r.instance == instance for r in runs):
                    continue
                cells = [mean(side, instance, (accounting, f)) if ran(side, f) else None for f in FRACTIONS]
                mine = [r for r in runs if r.side == side and r.instance == instance]
                print(
                    f"{instance:>9} {side:>12} "
                    + " ".join(f"{c:>8.4f} ({c / random_final:5.2f}x)" if c is not None else f"{'not run':>16}" for c in cells)
                    + f" {statistics.fmean(r.trials for r in mine):>7.0f} {statistics.fmean(r.seconds for r in mine):>6.2f}"
                )
        print()

    print("goal (trained epochs): hpsearch's final regret <= 0.15x random's, and at 25% <= the optuna baseline's final")
    for instance in args.instances:
        early = mean("hpsearch", instance, ("trained", 0.25)) <= mean("optuna", instance, ("trained", 1.0))
        if ran("hpsearch", 1.0):
            final = mean("hpsearch", instance, ("trained", 1.0)) / mean("random", instance, ("trained", 1.0))
            judged = f"final {final:.2f}x random: {'met' if final <= 0.15 else 'NOT met'}"
        else:
            judged = f"final: not run (--stop-at {args.stop_at})"
        print(f"  {instance}: {judged}; 25% vs optuna's final: {'met' if early else 'NOT met'}")

    ran_parallel = any(r.side == "hpsearch-4w" for r in runs)
    print(
        "\nparallel: simulated seconds to reach random search's final best, median over seeds (a seed that never"
        "\nreaches it counts as slowest), 1 worker / 4 workers (goal >= 3.5x)"
        if ran_parallel
        else "\nparallel: not run (--parallel-seeds 0)"
    )
    for instance in args.instances if ran_parallel else ():
        seeds = sorted({r.seed for r in runs if r.side == "hpsearch-4w" and r.instance == instance})
        clocks = {
            (r.side, r.seed): r.clock_to_target if r.clock_to_target is not None else math.inf
            for r in runs
            if r.instance == instance and r.side in ("hpsearch", "hpsearch-4w") and r.seed in seeds
        }
        one = statistics.median(clocks["hpsearch", s] for s in seeds)
        four = statistics.median(clocks["hpsearch-4w", s] for s in seeds)
        # Also per seed: after the shared design the two runs' trials differ, so a seed's ratio divides
        # two independent draws of a long-tailed time; the median times are the figure judged.
        ratios = [clocks["hpsearch", s] / clocks["hpsearch-4w", s] for s in seeds]
        paired = [r for r in ratios if not math.isnan(r)] or [math.nan]  # nan: neither side reached it
        verdict = "met" if one / four >= 3.5 else "NOT met"
        print(
            f"  {instance}: {one:.0f} s / {four:.0f} s = {one / four:.2f}x faster with 4 workers, {verdict} "
            f"({len(seeds)} seeds; per seed: {' '.join(f'{r:.2f}' for r in ratios)}, "
            f"median {statistics.median(paired):.2f}x)"
        )

    if args.speed_repeats:  # 0: a part of a protocol whose other part measures it
        simulated, bare = speed(args.data, args.speed_repeats)
        print(
            f"\nspeed: one {LCBENCH_BUDGET}-epoch run simulated {simulated:.2f} s, bare Optuna loop {bare:.2f} s: "
            f"{simulated / bare:.2f}x (goal <= 3x)"
        )


if __name__ == "__main__":
    main()
