"""``hpsearch simulate``: a search strategy run on a public learning-curve benchmark instead of training."""

from __future__ import annotations

import os
from collections.abc import Sequence

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.convergence import ConvergenceStop
from hpsearch.search.errors import EXIT_OK, UsageError
from hpsearch.search.resolved import check_study_name
from hpsearch.search.samplers import DEFAULT_PRUNER, DEFAULT_SAMPLER, PRUNERS, SAMPLERS, auto_pruner
from hpsearch.storage.attributes import METRIC_ATTR, SIMULATED_ATTR

DATA_ENV = "HPSEARCH_YAHPO_DATA"


def build_simulate_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="hpsearch simulate",
        description="Run a search strategy (sampler and pruner) on YAHPO Gym's lcbench surrogate: every trial's "
        "52 epochs are read from the benchmark's learning curve instead of trained, through the sampler, pruner "
        "and records a real search uses, in simulated time. Prints the best validation accuracy found and its "
        "normalized regret. Needs onnxruntime (pip install 'hpsearch[bench]') and YAHPO Gym's data folder.",
        epilog="example: hpsearch simulate --instance 167168 --data ../shared/yahpo_data --pruner sha --workers 4",
    )
    parser.add_argument("--benchmark", default="lcbench", help="the learning-curve benchmark (default: %(default)s)")
    parser.add_argument(
        "--instance", default="167168", help="the benchmark's instance: an OpenML task id (default: %(default)s)"
    )
    parser.add_argument("--data", help=f"YAHPO Gym's data folder, holding lcbench/ (default: ${DATA_ENV})")
    parser.add_argument("--sampler", default=DEFAULT_SAMPLER, help=f"{'|'.join(SAMPLERS[1:])} (default: %(default)s)")
    parser.add_argument("--pruner", default=DEFAULT_PRUNER, help=f"{'|'.join(PRUNERS)} (default: %(default)s)")
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
        help="the stored study's name (default: sim-BENCHMARK-INSTANCE-SAMPLER-PRUNER-sSEED)",
    )
    return parser


def simulate_main(argv: Sequence[str]) -> int:
    args = build_simulate_parser().parse_args(argv)
    from hpsearch.search.simulate import LCBENCH_BUDGET, CurveSimulation, load_benchmark

    if args.sampler not in SAMPLERS[1:]:
        raise UsageError(f"unknown sampler {args.sampler!r} for a simulation; choose from {', '.join(SAMPLERS[1:])}")
    if args.pruner not in PRUNERS:
        raise UsageError(f"unknown pruner {args.pruner!r}; choose from {', '.join(PRUNERS)}")
    checked = (("--budget", args.budget), ("--n-trials", args.n_trials), ("--workers", args.workers),
               ("--stop-when-converged", args.stop_when_converged))
    for flag, value in checked:
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1 (got {value})")
    data = args.data or os.environ.get(DATA_ENV)
    if data is None:
        raise UsageError(f"pass --data with YAHPO Gym's data folder (yahpo_data), or set ${DATA_ENV}")
    surrogate = load_benchmark(args.benchmark, args.instance, data)
    budget = args.budget if args.budget is not None or args.n_trials is not None else LCBENCH_BUDGET
    name = args.study_name or f"sim-{args.benchmark}-{args.instance}-{args.sampler}-{args.pruner}-s{args.seed}"
    check_study_name(name)
    study, recorder, closing = _open(args.storage, name, args)
    try:
        result = CurveSimulation(
            surrogate,
            args.sampler,
            args.pruner,
            args.seed,
            args.workers,
            budget,
            args.n_trials,
            study=study,
            recorder=recorder,
            stop=ConvergenceStop(args.stop_when_converged) if args.stop_when_converged else None,
        ).run()
    finally:
        closing()
    low, high = surrogate.target_range("val_accuracy")
    states = [t.state.name for t in result.study.get_trials(deepcopy=False)]
    print(
        f"Simulated {len(result.finished)} trials of lcbench instance {args.instance} (--sampler {args.sampler} "
        f"--pruner {args.pruner}{f' = {auto_pruner(args.sampler)}' if args.pruner == 'auto' else ''}) with {args.workers} worker(s): "
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
            f"Best val_accuracy {best:.4f}% (normalized regret {(high - best) / (high - low):.4f}): "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        )
    if args.storage:
        from hpsearch.storage.urls import mask_password

        print(
            f"Study {name!r} in {mask_password(args.storage)}; browse it with: optuna-dashboard {mask_password(args.storage)}"
        )
    return EXIT_OK


def _open(url: str | None, name: str, args: object) -> tuple:
    """The study, its recorder and what closes them: in memory, or a new study in the database at ``url``."""
    if url is None:
        return None, None, lambda: None
    import optuna

    from hpsearch.storage.database import StudyDatabase
    from hpsearch.storage.recorder import DatabaseRecorder
    from hpsearch.storage.urls import mask_password

    database = StudyDatabase.open_for_search(url)
    try:
        study = optuna.create_study(study_name=name, storage=database.storage, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        raise UsageError(
            f"study {name!r} already exists in {mask_password(url)}; choose another --study-name"
        ) from None
    study.set_user_attr(
        SIMULATED_ATTR,
        {k: getattr(args, k) for k in ("benchmark", "instance", "sampler", "pruner", "seed", "workers")},
    )
    study.set_user_attr(METRIC_ATTR, "val_accuracy")
    return study, DatabaseRecorder(database.storage, database.epoch_table), database.close
