"""``hpsearch worker``: run the trials of a study stored by ``hpsearch create`` (or ``hpsearch``)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.errors import EXIT_OK, EXIT_RUN_FAILED, UsageError
from hpsearch.search.heartbeat import add_heartbeat_arguments, heartbeat_from
from hpsearch.search.signals import EXIT_PREEMPTED

# Seconds a SIGTERM'd worker may train on to reach an epoch's checkpoint: well inside the 30 s
# that Kubernetes (terminationGracePeriodSeconds) and most schedulers give before SIGKILL.
DEFAULT_PREEMPT_GRACE_S = 5.0


def build_worker_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="hpsearch worker",
        description="Run trials of a study made by hpsearch create (or hpsearch), until its grid is done or "
        "it holds its number of trials. Start the same command on every machine; they share the work.",
    )
    parser.add_argument("--study", required=True, help="the study's name")
    parser.add_argument("--storage", help="study database URL (default: $HPSEARCH_STORAGE, else sqlite:///hpsearch.db)")
    parser.add_argument("--max-trials", "--n-trials", "--n_trials", dest="n_trials", type=int,
                        help="stop after this many trials of this worker, with exit 0")
    parser.add_argument("--max-time", "--max_time", type=float, metavar="SECONDS",
                        help="start no trial after this many seconds; the running one finishes, then exit 0 "
                        "(leave room for one trial before the job's time limit)")
    parser.add_argument("--preempt-grace", "--preempt_grace", type=float, default=DEFAULT_PREEMPT_GRACE_S, metavar="SECONDS",
                        help="on SIGTERM, train on up to this many seconds to finish the epoch and its checkpoint, "
                        "else stop at the next step; the trial is queued again at once and the worker exits "
                        f"{EXIT_PREEMPTED} (default: %(default)g)")
    parser.add_argument("--output-dir", "--output_dir", help="this worker's checkpoint folder (default: the study's, a path on the machine that created it; "
                        "with --artifacts, give each machine a folder of its own)")
    parser.add_argument("--threads", type=int, help="torch threads for this worker (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # A worker process that hpsearch --workers N (search(workers=N)) starts: the search prints the outcome.
    parser.add_argument("--local-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", help="no trial, epoch or FLOPs lines; the results table, warnings and errors stay")
    parser.add_argument("--device", help="this worker's device: cuda:N (one GPU of this machine), cuda, cpu, mps or auto "
                        "(default: the study's --device)")
    add_heartbeat_arguments(parser)
    parser.owned_elsewhere = _study_settings
    return parser


def _study_settings() -> dict[str, str]:
    """The study's settings, which ``hpsearch create`` stores and a worker reads, with where they go."""
    from hpsearch.search.cli import build_search_parser

    own = {option for action in build_worker_parser()._actions for option in action.option_strings}
    return {
        option: f"{option} is the study's: give it to hpsearch create, and every worker reads it from the study"
        for action in build_search_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option not in own
    }


def worker_main(argv: Sequence[str]) -> int:
    """``hpsearch worker``: load a study's stored search and run its trials.

    ``--device cuda:1`` makes ``cuda:1`` the trainer's device (and this process's current CUDA
    device); it does not set ``CUDA_VISIBLE_DEVICES=1`` here. CUDA reads that variable once, when
    it starts in a process, and any earlier CUDA call (an import, a plugin, a device check) would
    make a late setting silently ineffective; and ``cuda:1`` already means the second GPU this
    process sees, also under a scheduler's ``CUDA_VISIBLE_DEVICES``. ``--workers`` sets the
    variable only for the processes it starts, before they exist.
    """
    if any(arg.endswith(".toml") and (i == 0 or not argv[i - 1].startswith("-")) for i, arg in enumerate(argv)):
        # Before parsing: argparse would ask for --study and say nothing of the file.
        raise UsageError("hpsearch worker takes no study file: create the study from it (hpsearch create FILE.toml), "
                         "then start workers with --study NAME --storage URL")
    args = build_worker_parser().parse_args(argv)
    # Imported after parsing: hpsearch worker --help must not wait for Optuna, the storage layer or torch.
    import torch
    from tqdm.auto import tqdm

    from hpsearch.search.orchestrator import Orchestrator, open_database, silent
    from hpsearch.search.plugins import load_plugins
    from hpsearch.search.resolved import resolve
    from hpsearch.search.signals import Preemption, graceful_interrupts
    from hpsearch.search.study_claim import StudyChanged, load_spec
    from hpsearch.search.workers import use_device
    from hpsearch.storage.retry import DatabaseWaitStopped
    from hpsearch.storage.urls import mask_password, resolve_storage_url
    from hpsearch.trainers.hardware import resolve_device

    if args.n_trials is not None and args.n_trials < 1:
        raise UsageError(f"--n-trials must be at least 1 (got {args.n_trials})")
    if args.max_time is not None and not args.max_time > 0:
        raise UsageError(f"--max-time must be a positive number of seconds (got {args.max_time:g})")
    if not args.preempt_grace >= 0:
        raise UsageError(f"--preempt-grace must be 0 or more seconds (got {args.preempt_grace:g})")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {args.threads})")
    if args.device is not None:
        try:
            resolve_device(args.device)  # here, before the study is touched; use_device applies it
        except ValueError as error:
            raise UsageError(str(error)) from None
    heartbeat = heartbeat_from(args)
    url = resolve_storage_url(args.storage)
    database = open_database(url, heartbeat, tqdm.write, wait=True, create=False)
    stored = load_spec(database.load_study(args.study))
    spec = dataclasses.replace(stored, storage=url, output_dir=args.output_dir or stored.output_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_plugins(spec.plugins)  # the study's own plugins, so this worker knows its models and tasks
    resolved = use_device(resolve(spec), args.device)
    orchestrator = Orchestrator(resolved, echo=silent if args.quiet else tqdm.write, progress=not args.no_progress,
                                heartbeat=heartbeat, database=database, warn=tqdm.write)
    preemption = Preemption(args.preempt_grace)
    # A worker told to stop waits for an absent database no longer than its grace.
    database.storage.retry.give_up_at = preemption.deadline
    with graceful_interrupts(preemption):
        try:
            outcome = orchestrator.work(orchestrator.open(), args.n_trials, preemption=preemption, max_seconds=args.max_time)
        except StudyChanged as changed:
            # Only the code or a model's origin can differ here: the settings are the study's own.
            raise UsageError(
                f"study {changed.study_name!r} was created with other code ({'; '.join(changed.changes)}); a worker "
                "runs the study's code as it was created: put that code back on this machine (the same file at the "
                "same path, or the same package version), or queue a new study with hpsearch create --study NEW"
            ) from None
        except DatabaseWaitStopped as error:
            print(f"hpsearch: preempted by {preemption.signal_name} while {error}; "
                  "the running trial is left to its heartbeat retry", file=sys.stderr)
            return EXIT_PREEMPTED
    if not args.local_worker:
        handed_back = f", {outcome.preempted} handed back to the queue" if outcome.preempted else ""
        trials = f"{outcome.trials_run} trial{'' if outcome.trials_run == 1 else 's'}"
        print(f"Worker {os.getpid()}: {trials} run, {outcome.trials_failed} failed{handed_back}.")
        # A URL with a password is never printed: the command then reads $HPSEARCH_STORAGE, as this worker may have.
        storage = f" --storage {shlex.quote(url)}" if mask_password(url) == url else ""
        print(f"The study's results, with every worker's trials: hpsearch trials --study {shlex.quote(spec.name)}{storage}")
    if preemption.requested:
        print(f"hpsearch: preempted by {preemption.signal_name}; the study's queue holds the rest of the work", file=sys.stderr)
        return EXIT_PREEMPTED
    return EXIT_RUN_FAILED if outcome.trials_failed else EXIT_OK
