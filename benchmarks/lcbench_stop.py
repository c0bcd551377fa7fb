"""--stop-when-converged on YAHPO Gym's lcbench surrogate: the compute it saves and the regret it costs.

The default strategy (``--sampler gp --pruner auto``, which is ``rung``) runs the paper's full budget (6,544 epochs)
on instances 167168, 189873 and 189906, one simulated worker, seeds 0..N-1. With one worker a
study that stops is the same run cut short: the sampler's choices up to the stop do not depend
on what comes after. So each run is simulated once, and ``ConvergenceStop`` (the class the
search uses) is asked after every complete trial, in the order trials ended, whether the study
has converged; the figures for each patience are read where it first says yes. Random search
runs in the same script as the reference for normalized regret.

    python benchmarks/lcbench_stop.py --data ../shared/yahpo_data --seeds 10 --jobs 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import optuna

from hpsearch.search.convergence import ConvergenceStop
from hpsearch.search.samplers import DEFAULT_PRUNER, DEFAULT_SAMPLER
from hpsearch.search.simulate import LCBENCH_BUDGET, CurveSimulation, FinishedTrial, load_benchmark, optuna_loop

INSTANCES = ("167168", "189873", "189906")
PATIENCES = (10, 20, 30, 40)


def stop_point(finished: list[FinishedTrial], stop: ConvergenceStop | None) -> tuple[int, float]:
    """Epochs spent and the best value when ``stop`` first says the study converged (the end if never)."""
    values: list[float] = []
    for trial in finished:
        if trial.value is not None:
            values.append(trial.value)
            if stop is not None and stop.converged(values, "maximize"):
                return trial.spent, max(values)
    return finished[-1].spent, max(values)


def run_one(data: str, instance: str, seed: int) -> dict[str, tuple[float, float]]:
    """(share of the budget spent, normalized regret) for random search, the full default run, and each patience."""
    import torch

    torch.set_num_threads(1)  # one per job: --jobs processes share the cores
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    surrogate = load_benchmark("lcbench", instance, data)
    low, high = surrogate.target_range("val_accuracy")

    def regret(best: float) -> float:
        return (high - best) / (high - low)

    random = optuna_loop(
        surrogate, optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner(), LCBENCH_BUDGET
    )
    out = {"random": (1.0, regret(max(t.value for t in random if t.value is not None)))}
    finished = CurveSimulation(surrogate, DEFAULT_SAMPLER, DEFAULT_PRUNER, seed=seed).run().finished
    for label, stop in [("full", None), *((f"patience {p}", ConvergenceStop(p)) for p in PATIENCES)]:
        spent, best = stop_point(finished, stop)
        out[label] = (spent / LCBENCH_BUDGET, regret(best))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("HPSEARCH_YAHPO_DATA", "../shared/yahpo_data"))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--instances", nargs="+", default=list(INSTANCES))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    load_benchmark("lcbench", args.instances[0], args.data)  # a wrong folder stops here, not in every job
    print(
        f"lcbench, {args.seeds} seeds, budget {LCBENCH_BUDGET} epochs, --sampler {DEFAULT_SAMPLER} --pruner {DEFAULT_PRUNER}"
    )
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        jobs = {(i, s): pool.submit(run_one, args.data, i, s) for i in args.instances for s in range(args.seeds)}
        results = {key: job.result() for key, job in jobs.items()}
    print(f"({time.perf_counter() - started:.0f} s)\n")
    print(f"{'instance':>9} {'side':>12} {'budget spent':>13} {'regret':>8} {'x random':>9} {'x full run':>11}")
    for instance in args.instances:
        mine = [r for (i, _), r in results.items() if i == instance]
        random_regret = statistics.fmean(r["random"][1] for r in mine)
        full_regret = statistics.fmean(r["full"][1] for r in mine)
        for label in ["full", *(f"patience {p}" for p in PATIENCES)]:
            spent = statistics.fmean(r[label][0] for r in mine)
            regret = statistics.fmean(r[label][1] for r in mine)
            print(
                f"{instance:>9} {label:>12} {spent:>12.0%} {regret:>8.4f} {regret / random_regret:>8.2f}x "
                f"{regret - full_regret:>+10.4f}"
            )
    print("\n(x full run: the regret the stop adds to the full run's; regrets are means over seeds)")


if __name__ == "__main__":
    main()
