"""The ``hpsearch`` command: run a search, or one of the subcommands that inspect results."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Callable, Sequence

import optuna

from hpsearch.search import lr_find_cli, tables_cli, workers
from hpsearch.search.arguments import (
    ArgumentParser,
    add_task_arguments,
    add_training_arguments,
    flags,
    task_options,
    training_settings,
)
from hpsearch.search.dashboard_cli import dashboard_main
from hpsearch.search.errors import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, UsageError
from hpsearch.search.orchestrator import Orchestrator
from hpsearch.search.report import report_main
from hpsearch.search.results import format_results_table
from hpsearch.search.signals import Interrupted, graceful_interrupts
from hpsearch.search.spec import DEFAULT_N_TRIALS, PRUNERS, SAMPLERS, StudySpec, resolve
from hpsearch.search.workers import add_heartbeat_arguments, describe_queue, heartbeat_from, run_local_workers
from hpsearch.storage.urls import mask_password

EXAMPLES = """\
examples:
  hpsearch --models tfn_classifier --param_sweep embed_dim:64,128 kernel_type:rbf,compact
  hpsearch --models tfn_classifier transformer_classifier --param-sweep "embed_dim:32,64 lr:1e-3,3e-3"
  hpsearch --models tfn_classifier --param-sweep lr:1e-4..1e-2:log dropout:0..0.3 --n-trials 30

sweep grammar: name:v1,v2,... (a grid when every item is a list), name:low..high[:log]
(a range; switches to TPE). Sweepable names: the models' hyperparameters (hpsearch models)
and the trainer's: lr, weight_decay, batch_size, warmup_epochs, min_lr, grad_clip,
label_smoothing.

other commands (each has --help):
  hpsearch models              the registered models and their hyperparameters
  hpsearch studies             every study in the storage, with trial counts
  hpsearch trials --study S    a study's trials as a table, best first
  hpsearch export --study S    trials and per-epoch metrics to csv, parquet or json
  hpsearch lr-find --models M  the LR range test for one configuration, with a plot
  hpsearch create --study S    store a search with a new study and queue it; run nothing
  hpsearch worker --study S    run a stored study's trials (start one per machine or core)
  hpsearch dashboard           serve optuna-dashboard on the study database (127.0.0.1)
  hpsearch report --study S    one self-contained HTML report with every chart

exit codes: 0 done; 1 the search ran but a trial failed; 2 bad input (nothing written).
"""


DESCRIPTION = (
    "Search hyperparameters of PyTorch models with Optuna. Every trial trains through one "
    "shared trainer; results go to one study database (SQLite by default)."
)


def build_search_parser(prog: str = "hpsearch", description: str = DESCRIPTION) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description, epilog=EXAMPLES)
    what = parser.add_argument_group("what to search")
    what.add_argument("--models", nargs="+", required=True, metavar="MODEL", help="one or more registered models (hpsearch models lists them)")
    what.add_argument(*flags("param_sweep"), dest="param_sweep", nargs="+", default=[], metavar="ITEM", help="sweep items, as separate arguments or one quoted string")
    add_task_arguments(parser)
    add_training_arguments(parser)

    study = parser.add_argument_group("study")
    study.add_argument(*flags("study_name"), "--study", dest="study_name", help="default: MODELS-TASK, e.g. tfn_classifier-synthetic_tokens")
    study.add_argument("--storage", help="study database URL (default: $HPSEARCH_STORAGE, else sqlite:///OUTPUT_DIR/hpsearch.db)")
    study.add_argument(*flags("output_dir"), dest="output_dir", default=".", help="where the default database and the checkpoints go (default: the working directory)")
    study.add_argument("--sampler", choices=SAMPLERS, help="default: grid when every sweep item is a list, else tpe")
    study.add_argument("--pruner", choices=PRUNERS, default="median", help="performance pruner (default: %(default)s); the divergence guard is always on")
    study.add_argument("--metric", default="val_loss", help="the monitored value, reported every epoch (default: %(default)s)")
    study.add_argument("--direction", choices=("minimize", "maximize"), help="default: minimize for losses, maximize for accuracy")
    study.add_argument(*flags("n_trials"), dest="n_trials", type=int, help=f"trials to run (default: the whole grid, or {DEFAULT_N_TRIALS} for other samplers)")
    study.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    study.add_argument("--workers", type=int, default=1, help="local worker processes sharing the CPU cores (default: %(default)s)")
    study.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_heartbeat_arguments(study)
    return parser


def spec_from_args(args: argparse.Namespace) -> StudySpec:
    """The ``StudySpec`` the parsed flags describe; only flags the user gave are kept."""
    train, lr_finder = training_settings(args)
    return StudySpec(
        models=tuple(m for arg in args.models for m in arg.split(",") if m),
        sweep=tuple(args.param_sweep),
        task=args.task,
        task_options=task_options(args),
        train=train,
        lr_finder=lr_finder,
        study_name=args.study_name,
        sampler=args.sampler,
        pruner=args.pruner,
        metric=args.metric,
        direction=args.direction,
        n_trials=args.n_trials,
        timeout=args.timeout,
        output_dir=args.output_dir,
        storage=args.storage,
    )


def search_main(argv: Sequence[str]) -> int:
    """Run the search the flags describe and print the results."""
    args = build_search_parser().parse_args(argv)
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1 (got {args.workers})")
    resolved = resolve(spec_from_args(args))
    orchestrator = Orchestrator(resolved, progress=not args.no_progress, heartbeat=heartbeat_from(args))
    with graceful_interrupts():
        outcome = run_local_workers(orchestrator, args.workers) if args.workers > 1 else orchestrator.run()
    study = outcome.study
    print()
    print(format_results_table(study, resolved.spec.metric))
    print(f"\nStudy {study.study_name!r} in {mask_password(outcome.storage_url)}: {outcome.trials_run} trials run now, {len(study.trials)} in all.")
    print(f"Browse it:  optuna-dashboard {mask_password(outcome.storage_url)}")
    print(f"       or:  hpsearch dashboard --storage {mask_password(outcome.storage_url)}")
    if outcome.trials_failed:
        print(f"hpsearch: {outcome.trials_failed} trial(s) failed; their fail_reason attributes say why", file=sys.stderr)
        return EXIT_RUN_FAILED
    return EXIT_OK


def create_main(argv: Sequence[str]) -> int:
    """``hpsearch create``: store the search with a new study and queue its work; run nothing."""
    parser = build_search_parser(prog="hpsearch create", description="Create a study that holds a whole search, for workers to run.")
    args = parser.parse_args(argv)
    if args.workers != 1:
        raise UsageError("hpsearch create runs nothing; start workers with hpsearch worker")
    orchestrator = Orchestrator(resolve(spec_from_args(args)), progress=False, heartbeat=heartbeat_from(args))
    study, planned = orchestrator.create(orchestrator.resolved.n_trials)
    print(describe_queue(study, planned, orchestrator.storage_url))
    return EXIT_OK


def models_main(argv: Sequence[str]) -> int:
    """``hpsearch models``: every registered model with its hyperparameters."""
    from hpsearch.models import list_models

    ArgumentParser(prog="hpsearch models", description="List the registered models and their hyperparameters.").parse_args(argv)
    for model in list_models():
        print(f"{model.name}: {model.description}")
        for p in model.params:
            print(f"  {p.name:<16} {p.type_name:<22} default {p.default!s:<8} {p.help}")
    return EXIT_OK


SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "models": models_main,
    "studies": tables_cli.studies_main,
    "trials": tables_cli.trials_main,
    "export": tables_cli.export_main,
    "lr-find": lr_find_cli.lr_find_main,
    "create": create_main,
    "worker": workers.worker_main,
    "dashboard": dashboard_main,
    "report": report_main,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpsearch`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The CLI speaks for itself: Optuna's per-trial log lines, its tracebacks of failed trials
    # (the objective prints those once, with the reason) and experimental-API notices would
    # bury the epoch lines.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]](argv[1:])
        return search_main(argv)
    except UsageError as error:
        print(f"hpsearch: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as interrupt:
        print(f"hpsearch: stopped by {interrupt.signal_name}; the running trial is recorded as failed, finished trials are kept", file=sys.stderr)
        return interrupt.exit_code
    except KeyboardInterrupt:
        print("hpsearch: interrupted; finished trials are kept in the study", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
