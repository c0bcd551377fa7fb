"""Many workers on one study: ``hpsearch create``, ``hpsearch worker`` and ``--workers N``."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from typing import Sequence

import optuna
import torch
from optuna.trial import TrialState
from tqdm.auto import tqdm

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.errors import EXIT_OK, EXIT_RUN_FAILED, UsageError
from hpsearch.search.orchestrator import (
    FINISHED,
    Heartbeat,
    Orchestrator,
    SearchOutcome,
    load_spec,
    open_storage,
)
from hpsearch.search.plugins import load_plugins
from hpsearch.search.signals import graceful_interrupts
from hpsearch.search.spec import resolve
from hpsearch.storage.urls import (
    STORAGE_ENV,
    mask_password,
    resolve_storage_url,
    sqlite_path,
)


def add_heartbeat_arguments(parser: ArgumentParser) -> None:
    defaults = Heartbeat()
    parser.add_argument("--heartbeat-interval", type=int, default=defaults.interval, help="seconds between a running trial's heartbeats (default: %(default)s)")
    parser.add_argument("--grace-period", type=int, default=defaults.grace_period, help="seconds without a heartbeat before a trial counts as dead and is retried (default: %(default)s)")


def heartbeat_from(args: object) -> Heartbeat:
    interval, grace = args.heartbeat_interval, args.grace_period  # type: ignore[attr-defined]
    if interval < 1 or grace <= interval:
        raise UsageError(f"--grace-period ({grace}) must exceed --heartbeat-interval ({interval}), which must be at least 1")
    return Heartbeat(interval, grace)


def describe_queue(study: optuna.Study, planned: int, url: str) -> str:
    """What ``hpsearch create`` prints: the study, its planned trials, and a worker command to paste.

    A URL with a password is never printed whole, and a masked one would not connect, so then
    the command takes the storage from ``$HPSEARCH_STORAGE``, which the user sets themselves.
    """
    shown = mask_password(url)
    head = f"Study {study.study_name!r} in {shown}: {planned} trials to run. Start workers with\n"
    worker = f"hpsearch worker --study {shlex.quote(study.study_name)}"
    if shown == url:
        return f"{head}  {worker} --storage {shlex.quote(url)}"
    return (
        f"{head}  export {STORAGE_ENV}=<your storage URL, with its password>\n"
        f"  {worker}"
    )


def run_local_workers(orchestrator: Orchestrator, n_workers: int) -> SearchOutcome:
    """Queue the search, then run it in this process and ``n_workers - 1`` worker processes.

    This process is one of the workers: it has already paid the seconds of start-up (imports,
    the task's data) that each new process pays, so its trials begin while the others start.
    The CPU cores' torch threads are split evenly among the workers.
    """
    study, planned = orchestrator.create(orchestrator.resolved.n_trials)
    url = orchestrator.storage_url
    if planned == 0:
        orchestrator.echo(f"Study {study.study_name!r}: every grid point has already run; nothing to do.")
        return SearchOutcome(study, url, 0, 0)
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    hb = orchestrator.heartbeat
    command = [
        sys.executable, "-m", "hpsearch.search.cli", "worker", "--study", study.study_name,
        "--output-dir", orchestrator.spec.output_dir, "--threads", str(threads), "--no-progress",
        "--heartbeat-interval", str(hb.interval), "--grace-period", str(hb.grace_period),
    ]
    # The URL goes through the environment, not the command line, where `ps` would show a password.
    env = {**os.environ, STORAGE_ENV: url}
    before = {t.number for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL))}

    def finished_since_start() -> list[optuna.trial.FrozenTrial]:
        done = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL))
        return [t for t in done if t.number not in before]

    others = [subprocess.Popen(command, env=env) for _ in range(n_workers - 1)]
    bar = tqdm(total=planned, desc=f"{study.study_name} ({n_workers} workers)", unit="trial", disable=None if orchestrator.progress else True)
    torch.set_num_threads(threads)
    idle: list[subprocess.Popen] = []
    try:
        orchestrator.work(study, on_trial_end=lambda: bar.update(len(finished_since_start()) - bar.n))
        # The queue is empty: the others finish their trials. One still starting up when the
        # last trial ends has nothing left to do, and is stopped rather than waited for.
        while any(w.poll() is None for w in others):
            if not study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
                idle = [w for w in others if w.poll() is None]
                break
            try:
                next(w for w in others if w.poll() is None).wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            bar.update(len(finished_since_start()) - bar.n)
    finally:
        bar.close()
        for worker in others:
            if worker.poll() is None:
                worker.terminate()
        for worker in others:
            worker.wait()
    ran = finished_since_start()
    crashed = sum(w.returncode not in (0, EXIT_RUN_FAILED) for w in others if w not in idle)
    return SearchOutcome(study, url, len(ran), sum(t.state == TrialState.FAIL for t in ran) + crashed)


def build_worker_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="hpsearch worker",
        description="Run trials of a study made by hpsearch create (or hpsearch), until its grid is done or "
        "it holds its number of trials. Start the same command on every machine; they share the work.",
    )
    parser.add_argument("--study", required=True, help="the study's name")
    parser.add_argument("--storage", help="study database URL (default: $HPSEARCH_STORAGE, else sqlite:///hpsearch.db)")
    parser.add_argument("--n-trials", "--n_trials", type=int, help="stop after this many trials of this worker")
    parser.add_argument("--output-dir", "--output_dir", help="checkpoint root shared by all workers (default: the study's)")
    parser.add_argument("--threads", type=int, help="torch threads for this worker (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_heartbeat_arguments(parser)
    return parser


def worker_main(argv: Sequence[str]) -> int:
    """``hpsearch worker``: load a study's stored search and run its trials."""
    args = build_worker_parser().parse_args(argv)
    if args.n_trials is not None and args.n_trials < 1:
        raise UsageError(f"--n-trials must be at least 1 (got {args.n_trials})")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {args.threads})")
    heartbeat = heartbeat_from(args)
    url = resolve_storage_url(args.storage)
    database = sqlite_path(url)
    if database is not None and not database.exists():
        raise UsageError(f"no study database at {database}; pass --storage, or create the study with hpsearch create")
    try:
        stored = optuna.load_study(study_name=args.study, storage=open_storage(url))
    except KeyError:
        raise UsageError(f"no study named {args.study!r} in {mask_password(url)}; see hpsearch studies") from None
    spec = dataclasses.replace(load_spec(stored), storage=url, output_dir=args.output_dir or load_spec(stored).output_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_plugins(spec.plugins)  # the study's own plugins, so this worker knows its models and tasks
    orchestrator = Orchestrator(resolve(spec), progress=not args.no_progress, heartbeat=heartbeat, seeded_sampler=False)
    with graceful_interrupts():
        outcome = orchestrator.work(orchestrator.open(), args.n_trials)
    print(f"Worker {os.getpid()}: {outcome.trials_run} trials run, {outcome.trials_failed} failed.")
    return EXIT_RUN_FAILED if outcome.trials_failed else EXIT_OK
