"""The ``hpsearch`` command: run a search, or one of the subcommands that inspect results."""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from hpsearch.models import HyperParam, ModelSpec, list_models
from hpsearch.search.arguments import (
    ArgumentParser,
    add_plugin_argument,
    add_task_arguments,
    add_training_arguments,
    flags,
    task_options,
    training_settings,
)
from hpsearch.search.errors import EXIT_DISK_FULL, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, UsageError, did_you_mean
from hpsearch.search.heartbeat import add_heartbeat_arguments, heartbeat_from
from hpsearch.search.plugins import load_plugins, plugin_key, plugin_origin, preload_plugins
from hpsearch.search.resolved import prepare, resolve
from hpsearch.search.signals import Interrupted, graceful_interrupts, interruption
from hpsearch.search.spec import STUDY_OPTIONS, StudySpec
from hpsearch.search.study_file import merge, read_study_file
from hpsearch.storage.errors import DiskFullError, StorageError
from hpsearch.storage.retry import DatabaseUnavailable
from hpsearch.trainers.config import TRAINER_PARAMS
from hpsearch.trainers.task_registry import list_tasks

# Modules that import torch, Optuna, the storage layer or plotly are imported by the functions
# that use them: every command, --help included, would otherwise wait seconds for them.

EXAMPLES = """\
examples:
  hpsearch --models tfn_classifier --param_sweep embed_dim:64,128 kernel_type:rbf,compact
  hpsearch --models tfn_classifier transformer_classifier --param-sweep "embed_dim:32,64 lr:1e-3,3e-3"
  hpsearch --models tfn_classifier --param-sweep lr:1e-4..1e-2:log dropout:0..0.3 --n-trials 30
  hpsearch --plugin my_models.py --models my_model --task csv_timeseries --data ETTh1.csv --target OT
  hpsearch run studies/tfn_sweep.toml --epochs 1      (a study file; flags override it)

sweep grammar: name:v1,v2,... (a grid when every item is a list), name:low..high[:log]
(a range; switches to the GP sampler). Sweepable names: the models' hyperparameters (hpsearch models),
the task's step's, and the trainer's: {trainer_params}.

other commands (each has --help):
  hpsearch run FILE.toml       the search a study file describes (studies/ has examples)
  hpsearch models              the registered models and their hyperparameters
  hpsearch tasks               the registered tasks and their options
  hpsearch studies             every study in the storage, with trial counts
  hpsearch trials --study S    a study's trials as a table, best first
  hpsearch export --study S    trials and per-epoch metrics to csv, parquet or json
  hpsearch lr-find --models M  the LR range test for one configuration, with a plot
  hpsearch create --study S    store a search with a new study and queue it; run nothing
  hpsearch worker --study S    run a stored study's trials (start one per machine or core)
  hpsearch proxy --storage DB  serve the study database to many workers (grpc://host:port)
  hpsearch dashboard           serve optuna-dashboard on the study database (127.0.0.1)
  hpsearch report --study S    one self-contained HTML report with every chart
  hpsearch doctor              what --precision auto measures and picks on this machine
  hpsearch simulate            a sampler and pruner on a public learning-curve benchmark (lcbench)
  hpsearch replay --study S    a finished study's curves replayed under other pruners
  hpsearch audit --study S     after an incident: epochs trained twice or lost, trials left RUNNING

exit codes: 0 done; 1 the search ran but a trial failed; 2 bad input (nothing written); 74 a disk is full;
130 stopped by Ctrl-C; 143 preempted by SIGTERM (the trial is queued again: requeue the worker).
""".replace("{trainer_params}", ", ".join(p.name for p in TRAINER_PARAMS))


DESCRIPTION = (
    "Search hyperparameters of PyTorch models with Optuna. Every trial trains through one "
    "shared trainer; results go to one study database (SQLite by default)."
)


def build_search_parser(prog: str = "hpsearch", description: str = DESCRIPTION, models_required: bool = True,
                        runs_trials: bool = True) -> ArgumentParser:
    """The search's flags; without ``runs_trials`` (``hpsearch create``), none for the processes that run them."""
    parser = ArgumentParser(prog=prog, description=description, epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=f"hpsearch {importlib.metadata.version('hpsearch')}")
    what = parser.add_argument_group("what to search")
    what.add_argument("--models", nargs="+", required=models_required, metavar="MODEL", help="one or more registered models (hpsearch models lists them)")
    what.add_argument(*flags("param_sweep"), dest="param_sweep", nargs="+", action="extend", default=None, metavar="ITEM", help="sweep items, as separate arguments or one quoted string; repeatable")
    add_plugin_argument(what)
    add_training_arguments(parser)

    study = parser.add_argument_group("study")
    add_study_arguments(study)
    if runs_trials:
        study.add_argument("--workers", type=int, default=1, help="local worker processes sharing the CPU cores (default: %(default)s)")
        study.add_argument("--threads", type=int, help="torch threads in all, split among --workers (default: one per CPU core); "
                           "on a machine other jobs keep busy, the cores left to this search: threads that outnumber free "
                           "cores wait on each other at every operation")
        study.add_argument("--devices", help="one GPU per worker: cuda:0,cuda:1,... (round-robin when workers outnumber them), "
                           "cuda or auto (every visible GPU; auto without one: the --device default)")
    else:
        parser.owned_elsewhere = lambda: dict.fromkeys(
            ("--workers", "--threads", "--devices"),
            "hpsearch create runs nothing; start workers with hpsearch worker (--device cuda:N picks a GPU, --threads N "
            "its torch threads)")
    study.add_argument("--no-progress", action="store_true", help="no progress bar")
    study.add_argument("-q", "--quiet", action="store_true", help="no trial, epoch or FLOPs lines; the results table, warnings and errors stay")
    add_heartbeat_arguments(study)
    add_task_arguments(parser)  # last: a task option named like one of the flags above stays the flag
    return parser


def add_study_arguments(group: argparse._ArgumentGroup) -> None:
    """A flag for every study option, from its declaration in ``StudySpec`` (``spec.study_option``).

    Each defaults to None, so the flags a user gave are the ones that are not None.
    """
    hints = get_type_hints(StudySpec)
    for option in STUDY_OPTIONS:
        declared, kind = option.metadata["option"], _flag_type(hints[option.name])
        names = [*flags(option.name), *declared["aliases"]]
        if kind is bool:
            group.add_argument(*names, dest=option.name, action="store_true", default=None, help=declared["help"])
            continue
        metavar = declared["metavar"] or ("{" + ",".join(declared["choices"]) + "}" if declared["choices"] else None)
        group.add_argument(*names, dest=option.name, type=kind, choices=declared["choices"], metavar=metavar,
                           help=declared["help"].replace("%", "%%"))


def _flag_type(hint: Any) -> Callable[[str], Any]:
    """How a flag's text becomes the option's value: its annotated type, a comma list for a tuple."""
    if get_origin(hint) is tuple:
        return _comma_list
    return next(arg for arg in get_args(hint) if arg is not type(None)) if get_args(hint) else hint


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(item for item in text.split(",") if item)


def given_values(args: argparse.Namespace) -> dict[str, Any]:
    """The ``StudySpec`` fields the parsed flags set; a flag not given sets nothing.

    One pass over the flags serves both a plain search (``StudySpec(**values)``) and ``hpsearch
    run``, whose study file's values these override.
    """
    values: dict[str, Any] = {}
    if args.models:
        values["models"] = tuple(m for arg in args.models for m in arg.split(",") if m)
    if args.param_sweep is not None:
        values["sweep"] = tuple(args.param_sweep)
    if args.plugins is not None:
        values["plugins"] = tuple(plugin_key(p, Path.cwd()) for p in args.plugins)
    if task_options(args):
        values["task_options"] = task_options(args)
    if training_settings(args):
        values["train"] = training_settings(args)
    for option in (*STUDY_OPTIONS, *(f for f in fields(StudySpec) if f.name == "task")):
        if getattr(args, option.name, None) is not None:
            values[option.name] = getattr(args, option.name)
    return values


def search_main(argv: Sequence[str]) -> int:
    """Run the search the flags describe and print the results."""
    preload_plugins(argv)
    args = build_search_parser().parse_args(argv)
    return run_search(args, StudySpec(**given_values(args)), {})


def run_main(argv: Sequence[str]) -> int:
    """``hpsearch run FILE.toml [flags]``: the search a study file describes, flags given on top."""
    args, spec, where = study_file_search(argv, build_run_parser)
    return run_search(args, spec, where)


def study_file_search(
    argv: Sequence[str], build_parser: Callable[[], ArgumentParser]
) -> tuple[argparse.Namespace, StudySpec, dict[str, str]]:
    """The flags, and the search of the study file among them with the flags on top (and ``prepare``'s ``where``).

    Without a study file (``create``'s is optional), the search the flags alone describe. The
    parser is built once the plugins are loaded: a plugin's task options are flags of it too.
    """
    first = next((a for a in argv if not a.startswith("-")), None)
    preloaded = read_study_file(first) if first is not None and first.endswith(".toml") else None
    if preloaded is not None:
        try:
            load_plugins(preloaded.values.get("plugins", ()))
        except UsageError as error:  # "plugin x.py: no such file" said nothing of the file that named it
            raise UsageError(f"{preloaded.path}: plugins: {error}") from None
    preload_plugins(argv)
    args = build_parser().parse_args(argv)
    overrides = given_values(args)
    if args.study_file is None:
        if not overrides.get("models"):
            raise UsageError("name the models with --models, or give a study file (hpsearch create FILE.toml)")
        return args, StudySpec(**overrides), {}
    study = preloaded if preloaded is not None and args.study_file == first else read_study_file(args.study_file)
    values = merge(study.values, overrides)
    if not values.get("models"):
        raise UsageError(f"{study.path}: no models; add models = [\"tfn_classifier\"] or pass --models")
    # What a flag overrode is named by the flag, prepare's default; the rest by the file's key.
    where = {f"[task] {name}": f"{study.path}: [task] {name}" for name in study.values.get("task_options", {})
             if name not in overrides.get("task_options", {})}
    where |= {name: f"{study.path}: {name}" for name in study.values
              if name not in overrides and name not in ("task_options", "train")}
    return args, StudySpec(**values), where


def build_run_parser() -> ArgumentParser:
    return _study_file_parser(
        "hpsearch run",
        "Run the search a study file (TOML) describes. Every search flag may follow the file "
        "and overrides it: --epochs 1 replaces [train] epochs, --models replaces models.",
        file_required=True,
    )


def build_create_parser() -> ArgumentParser:
    return _study_file_parser(
        "hpsearch create",
        "Create a study that holds a whole search, for workers to run: the search the flags describe, "
        "or a study file's (TOML, as hpsearch run takes it) with any flags on top.",
        file_required=False,
        runs_trials=False,
    )


def _study_file_parser(prog: str, description: str, file_required: bool, runs_trials: bool = True) -> ArgumentParser:
    """The search's flags after a study file, which ``--models`` need not repeat."""
    parser = build_search_parser(prog=prog, description=description, models_required=False, runs_trials=runs_trials)
    if file_required:
        parser.add_argument("study_file", metavar="FILE.toml", help="the study file (studies/ has examples)")
    else:
        parser.add_argument("study_file", nargs="?", metavar="FILE.toml", help="a study file (optional; studies/ has examples)")
    return parser


def run_search(args: argparse.Namespace, spec: StudySpec, where: dict[str, str]) -> int:
    """Resolve ``spec``, run it (in ``args.workers`` processes) and print the results (``prepare``'s ``where``)."""
    from tqdm.auto import tqdm

    from hpsearch.search.orchestrator import Orchestrator, silent
    from hpsearch.search.results import format_results_table, run_summary
    from hpsearch.search.workers import run_local_workers, use_device, worker_devices

    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1 (got {args.workers})")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {args.threads})")
    devices = worker_devices(args.devices, args.workers, spec.train.get("device", "auto"))
    resolved = prepare(spec, where)
    # This process is the first worker: its trainer takes the first device.
    orchestrator = Orchestrator(use_device(resolved, devices[0]), echo=silent if args.quiet else tqdm.write,
                                progress=not args.no_progress, heartbeat=heartbeat_from(args), warn=tqdm.write)
    with graceful_interrupts():
        if args.workers > 1:
            outcome = run_local_workers(orchestrator, args.workers, devices, args.quiet, args.threads)
        else:
            if args.threads is not None:
                import torch

                torch.set_num_threads(args.threads)
            outcome = orchestrator.run()
    if outcome.idle and args.quiet:  # said through the echo -q silences; why nothing ran is no progress line
        print(orchestrator.nothing_to_do(outcome.study))
    print()
    print(format_results_table(outcome.study, resolved.spec.metric))
    print()
    print("\n".join(run_summary(outcome, resolved)))
    if outcome.trials_failed:
        print(f"hpsearch: {outcome.trials_failed} trial(s) failed; their fail_reason attributes say why", file=sys.stderr)
        return EXIT_RUN_FAILED
    return EXIT_OK


def create_main(argv: Sequence[str]) -> int:
    """``hpsearch create``: store the search with a new study and queue its work; run nothing."""
    args, spec, where = study_file_search(argv, build_create_parser)
    import optuna

    from hpsearch.search.orchestrator import Orchestrator
    from hpsearch.search.results import strategy_line
    from hpsearch.search.study_claim import load_spec
    from hpsearch.search.workers import describe_queue

    orchestrator = Orchestrator(prepare(spec, where), progress=False, heartbeat=heartbeat_from(args))
    study, planned = orchestrator.create(orchestrator.resolved.n_trials)
    stored = load_spec(study)
    kept = _stored_over_given(stored, orchestrator.resolved.spec)
    # First: the worker command to paste ends the output. The strategy is the one workers run, the study's.
    print(strategy_line(resolve(replace(stored, storage=spec.storage)) if kept else orchestrator.resolved))
    if kept:
        print(f"Workers run the study's stored settings, not this command's: {kept}; pass --study-name NEW to run these")
    if planned == 0:
        running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
        print(orchestrator.nothing_to_do(study) if not running else
              f"Study {study.study_name!r}: nothing left to queue; its workers are running its last {running} trial(s).")
        return EXIT_OK
    print(describe_queue(study, planned, orchestrator.storage_url, orchestrator.resolved.spec.artifacts, orchestrator.heartbeat))
    return EXIT_OK


# Study options a re-run of create may give otherwise without effect on workers: where the study
# is, its budget (create queues it), and what create itself checks or refuses.
_CREATE_OWN_OPTIONS = ("study_name", "storage", "output_dir", "artifacts", "n_trials", "allow_changes")


def _stored_over_given(stored: StudySpec, given: StudySpec) -> str:
    """The study options workers read from ``stored`` that ``given`` (a re-run of create) sets otherwise, as flags."""
    differ = [option.name for option in STUDY_OPTIONS
              if option.name not in _CREATE_OWN_OPTIONS and getattr(stored, option.name) != getattr(given, option.name)]
    def shown(value: Any) -> str:
        return "none" if value is None else str(value)

    return ", ".join(f"{flags(name)[0]} {shown(getattr(stored, name))} (given {shown(getattr(given, name))})" for name in differ)


def models_main(argv: Sequence[str]) -> int:
    """``hpsearch models``: every registered model with its input and hyperparameters."""
    _parse_listing(argv, "hpsearch models", "List the registered models: the input each takes, and each hyperparameter's "
                   "type, default and allowed values (what --param-sweep accepts).")
    print(format_models_table(list_models()))
    return EXIT_OK


def format_models_table(models: Sequence[ModelSpec]) -> str:
    """A block per model (name, input kind, origin, description), its hyperparameters in aligned columns."""
    entries = []
    for model in models:
        origin = plugin_origin("model", model.name)
        title = f"{model.name}  (input: {model.input_kind}{f'; from {origin}' if origin else ''})  {model.description}"
        entries.append((title.rstrip(), list(model.params)))
    return format_schema_blocks(entries, "hyperparameter")


def tasks_main(argv: Sequence[str]) -> int:
    """``hpsearch tasks``: every registered task with its options (the task flags)."""
    _parse_listing(argv, "hpsearch tasks", "List the registered tasks and each one's options: set them with the flag "
                   "of the same name, or in a study file's [task] table.")
    entries = []
    for task in list_tasks():
        origin = plugin_origin("task", task.name)
        entries.append((f"{task.name}{f'  (from {origin})' if origin else ''}  {task.description}".rstrip(), list(task.options)))
    print(format_schema_blocks(entries, "option"))
    return EXIT_OK


def _parse_listing(argv: Sequence[str], prog: str, description: str) -> None:
    """A listing command's arguments: only ``--plugin``, whose plugins are loaded here."""
    parser = ArgumentParser(prog=prog, description=description)
    add_plugin_argument(parser)
    args = parser.parse_args(argv)
    load_plugins(plugin_key(p, Path.cwd()) for p in args.plugins or ())


def format_schema_blocks(entries: Sequence[tuple[str, Sequence[HyperParam]]], noun: str) -> str:
    """A block per entry: its title line, then its parameters' name, type, default, allowed values and help, aligned."""
    header = (noun, "type", "default", "allowed", "description")
    rows = [[(p.name, p.kind, _shown(p.default), _allowed(p), p.help) for p in params] for _, params in entries]
    widths = [max(len(row[i]) for row in [header, *(r for rs in rows for r in rs)]) for i in range(4)]

    def line(cells: Sequence[str]) -> str:
        return "  " + "  ".join([*(c.ljust(w) for c, w in zip(cells, widths)), cells[-1]]).rstrip()

    blocks = []
    for (title, _), block_rows in zip(entries, rows):
        blocks.append("\n".join([title, line(header), *(line(row) for row in block_rows)] if block_rows else [title]))
    return "\n\n".join(blocks)


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else "''" if value == "" else str(value)


def _allowed(param: HyperParam) -> str:
    """A hyperparameter's allowed values: its choices, or its bounds."""
    if param.choices:
        return ", ".join(_shown(c) for c in param.choices)
    if param.low is not None and param.high is not None:
        return f"{param.low:g}..{param.high:g}"
    if param.low is not None:
        return f">= {param.low:g}"
    return f"<= {param.high:g}" if param.high is not None else ""


def _imported(module: str, function: str) -> Callable[[Sequence[str]], int]:
    """A subcommand imported when it runs: what it imports (torch, Optuna, plotly, ...) would slow every other command."""

    def run(argv: Sequence[str]) -> int:
        return getattr(importlib.import_module(f"hpsearch.search.{module}"), function)(argv)

    return run


SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "run": run_main,
    "models": models_main,
    "tasks": tasks_main,
    "studies": _imported("tables_cli", "studies_main"),
    "trials": _imported("tables_cli", "trials_main"),
    "export": _imported("tables_cli", "export_main"),
    "lr-find": _imported("lr_find_cli", "lr_find_main"),
    "create": create_main,
    "worker": _imported("worker_cli", "worker_main"),
    "proxy": _imported("proxy_cli", "proxy_main"),
    "dashboard": _imported("dashboard_cli", "dashboard_main"),
    "report": _imported("report_cli", "report_main"),
    "doctor": _imported("doctor_cli", "doctor_main"),
    "simulate": _imported("simulate_cli", "simulate_main"),
    "replay": _imported("replay_cli", "replay_main"),
    "audit": _imported("audit_cli", "audit_main"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpsearch`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not {"-h", "--help"} & set(argv) and (not argv or argv[0] not in WITHOUT_OPTUNA):
        from hpsearch.search.quiet import silence_optuna  # here: it imports Optuna

        silence_optuna()
    try:
        if argv and not argv[0].startswith("-") and argv[0] not in SUBCOMMANDS:
            # A search takes options only: a first word is a command, maybe misspelled.
            raise UsageError(f"unknown command {argv[0]!r}{did_you_mean(argv[0], SUBCOMMANDS)} (see hpsearch --help)")
        code = SUBCOMMANDS[argv[0]](argv[1:]) if argv and argv[0] in SUBCOMMANDS else search_main(argv)
        sys.stdout.flush()  # here, where a reader that left is caught below, not at exit
        return code
    except DiskFullError as error:
        # Before StorageError: a full disk is met at run time, after things were written.
        print(f"hpsearch: {error}; free space and start a worker again", file=sys.stderr)
        return EXIT_DISK_FULL
    except (UsageError, StorageError) as error:
        print(f"hpsearch: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseUnavailable as error:
        # Past --db-timeout: a run-time failure, not bad input. Finished trials are in the study,
        # and a running one is left to its heartbeat retry.
        kept = "" if argv[:1] == ["proxy"] else ", finished trials are kept"  # the proxy ran none
        print(f"hpsearch: error: {error}; stopped after --db-timeout{kept}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except BrokenPipeError:
        # The reader left (hpsearch models | head): say nothing, and let no flush at exit fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (Interrupted, Exception) as error:
        interrupt = interruption(error)  # also behind an error that the interrupted code's cleanup raised
        if interrupt is None:
            raise
        print(f"hpsearch: stopped by {interrupt.signal_name}{_what_an_interrupt_left(argv)}", file=sys.stderr)
        return interrupt.exit_code
    except KeyboardInterrupt:
        print(f"hpsearch: interrupted{_what_an_interrupt_left(argv)}", file=sys.stderr)
        return 130


def _what_an_interrupt_left(argv: Sequence[str]) -> str:
    """What an interrupted command left in the study, for the line it ends with: a search's or worker's trials, else nothing."""
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    if command == "worker":  # its trial was queued again as it stopped
        return ("; the running trial is recorded as failed and queued again, finished trials are kept; the next worker "
                "resumes it from its last checkpoint")
    if command not in (None, "run"):  # the other commands run no trials
        return ""
    return ("; the running trial is recorded as failed, finished trials are kept; the same command again resumes it "
            "from its last checkpoint")


# As a process killed by SIGPIPE exits, so a pipeline reads it as the shell would.
EXIT_BROKEN_PIPE = 141
# Commands that never touch Optuna; they, and every --help, skip importing it (a third of a second).
WITHOUT_OPTUNA = frozenset({"models", "tasks", "doctor"})


def console() -> None:
    """The ``hpsearch`` console script: ``main``, then an exit that skips Python's last garbage collection."""
    code = main()
    database = sys.modules.get("hpsearch.storage.database")  # imported by every command that opened one
    if database is not None:
        database.close_all()
    # What is still alive is the OS's to free. Collecting it first cost about a second of CPU
    # after torch (several on busy cores): at the end of every command, and out of a preempted
    # worker's grace. The databases are closed above, so nothing is left unwritten.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console()
