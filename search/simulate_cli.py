"""``hpsearch simulate``: a search strategy run on a public learning-curve benchmark instead of training."""

from __future__ import annotations

from collections.abc import Sequence

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.errors import EXIT_OK
from hpsearch.search.samplers import (
    DATA_ENV,
    DEFAULT_PRUNER,
    DEFAULT_SAMPLER,
    SAMPLERS,
    SIMULATED_PRUNERS,
    pruner_that_runs,
)


def build_simulate_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="hpsearch simulate",
        description="Run a search strategy (sampler and pruner) on YAHPO Gym's lcbench surrogate: every trial's "
        "52 epochs are read from the benchmark's learning curve instead of trained, through the sampler, pruner "
        "and records a real search uses, in simulated time. Prints the best validation accuracy found and its "
        "normalized regret. Needs onnxruntime (pip install 'hpsearch[bench]') and YAHPO Gym's data folder. "
        "In Python: hpsearch.search.simulate_search.",
        epilog="example: hpsearch simulate --instance 167168 --data ../shared/yahpo_data --pruner sha --workers 4",
    )
    parser.add_argument("--benchmark", default="lcbench", help="the learning-curve benchmark (default: %(default)s)")
    parser.add_argument(
        "--instance", default="167168", help="the benchmark's instance: an OpenML task id (default: %(default)s)"
    )
    parser.add_argument("--data", help=f"YAHPO Gym's data folder, holding lcbench/ (default: ${DATA_ENV})")
    parser.add_argument("--sampler", default=DEFAULT_SAMPLER, help=f"{'|'.join(SAMPLERS[1:])} (default: %(default)s)")
    parser.add_argument("--pruner", default=DEFAULT_PRUNER, help=f"{'|'.join(SIMULATED_PRUNERS)} (default: %(default)s)")
    parser.add_argument(
        "--budget",
        type=int,
        help="epochs all workers may train together (default: the YAHPO Gym "
        "paper's ceil(20*52 + sqrt(7)*52*40) = 6544 unless --n-trials is given)",
    )
    parser.add_argument(
        "--n-trials", "--n_trials", type=int, help="trials to start (default: until the budget is spent)"
    )
    parser.add_argument(
        "--stop-when-converged", "--stop_when_converged", type=int, metavar="N",
        help="start no trial once N complete trials in a row have not improved the best (as in a search)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="simulated workers taking trials side by side (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (default: %(default)s)")
    parser.add_argument(
        "--storage",
        help="keep the study in this database (sqlite:///file.db, postgresql://...) for "
        "the dashboard and the table commands (default: in memory, gone at exit)",
    )
    parser.add_argument(
        "--study-name",
        "--study_name",
        help="the stored study's name (default: sim-BENCHMARK-INSTANCE-SAMPLER-PRUNER-sSEED, and -wN with N workers)",
    )
    return parser


def simulate_main(argv: Sequence[str]) -> int:
    args = build_simulate_parser().parse_args(argv)
    from hpsearch.search.simulate import simulate_search

    result = simulate_search(
        args.instance, args.data, args.sampler, args.pruner, seed=args.seed, workers=args.workers, budget=args.budget,
        n_trials=args.n_trials, stop_when_converged=args.stop_when_converged, storage=args.storage,
        study_name=args.study_name, benchmark=args.benchmark,
    )
    states = [t.state.name for t in result.study.get_trials(deepcopy=False)]
    print(
        f"Simulated {len(result.finished)} trial{'s' if len(result.finished) != 1 else ''} of lcbench instance {args.instance} (--sampler {args.sampler} "
        f"--pruner {args.pruner}{f' = {pruner_that_runs(args.pruner, args.sampler)}' if args.pruner == 'auto' else ''}) with {args.workers} worker(s): "
        f"{states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned; {result.spent} epochs trained, "
        f"{result.clock / 3600:.2f} simulated hours"
        + (f"; converged (--stop-when-converged {args.stop_when_converged})." if result.converged else ".")
    )
    best = result.best()
    if best is None:
        print("No trial ran all 52 epochs: raise --budget or --n-trials.")
    else:
        params = next(t.params for t in result.study.get_trials(deepcopy=False) if t.value == best)
        print(
            f"Best val_accuracy {best:.4f}% (normalized regret {result.regret():.4f}): "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        )
        # Shares of the budget, not of what was spent: a converged run's figures compare with a full run's.
        whole, of = (result.budget, "budget") if result.budget is not None else (result.spent, "epochs trained")
        marks = [(f"{fraction:.0%}", result.regret(fraction * whole)) for fraction in (0.25, 0.5)]
        print("Regret with " + ", ".join(f"{mark} of the {of} {'(no trial had ended)' if r is None else f'{r:.4f}'}"
                                          for mark, r in marks)
              + f" (the best trial that had ended by then, of {whole} epochs; all {result.spent} trained: {result.regret():.4f}).")
    if args.storage:
        from hpsearch.storage.urls import mask_password

        print(
            f"Study {result.study.study_name!r} in {mask_password(args.storage)}; browse it with: "
            f"optuna-dashboard {mask_password(args.storage)}"
        )
    return EXIT_OK
