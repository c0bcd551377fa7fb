"""Many workers on one study: ``hpsearch create``, ``hpsearch worker`` and ``--workers N``."""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from hpsearch.search.errors import EXIT_RUN_FAILED, UsageError
from hpsearch.search.halving import end_at_what_ran, halving_trials_left, is_halving
from hpsearch.search.heartbeat import Heartbeat, heartbeat_flags
from hpsearch.search.orchestrator import (
    FINISHED,
    Orchestrator,
    SearchOutcome,
)
from hpsearch.search.resolved import ResolvedSpec
from hpsearch.search.signals import Interrupted, interruption
from hpsearch.storage.urls import (
    STORAGE_ENV,
    mask_password,
)
from hpsearch.trainers.hardware import cuda_index, physical_gpu, resolve_device, visible_gpus


def describe_queue(
    study: optuna.Study, planned: int, url: str, artifacts: str | None = None, heartbeat: Heartbeat | None = None
) -> str:
    """What ``hpsearch create`` prints: the study, its planned trials, and a worker command to paste.

    A URL with a password is never printed whole, and a masked one would not connect, so then
    the command takes the storage from ``$HPSEARCH_STORAGE``, which the user sets themselves.
    With an artifact store, machines share no folder: the command keeps each worker's working
    copies in the folder it starts in (the study's ``--output-dir`` is a path on this machine).
    Liveness settings given to ``create`` other than the defaults are passed on: they are each
    worker's own, not stored with the study, and every worker of a study should share them.
    """
    shown = mask_password(url)
    pruner = study.pruner
    rounds = (f" (halving: they wait at epochs {', '.join(map(str, pruner.rungs))} for each other, and the best third "
              "go on as trials of their own)") if is_halving(pruner) and pruner.rungs else ""
    head = f"Study {study.study_name!r} in {shown}: {planned} trial{'s' if planned != 1 else ''} to run{rounds}. Start workers with\n"
    worker = f"hpsearch worker --study {shlex.quote(study.study_name)}"
    if artifacts:
        worker += " --output-dir ."  # checkpoints under ./checkpoints, in the folder the worker starts in
    if heartbeat is not None:
        worker = " ".join([worker, *heartbeat_flags(heartbeat)])
    # torch and numpy each take a thread per core by default: workers sharing a machine oversubscribe it.
    shares = "  # several workers on one machine: OMP_NUM_THREADS=N before each and --threads N after, N its share of the cores"
    if shown == url:
        return f"{head}  {worker} --storage {shlex.quote(url)}\n{shares}"
    return (
        f"{head}  export {STORAGE_ENV}=<your storage URL, with its password>\n"
        f"  {worker}\n{shares}"
    )


def assign_devices(spec: str, n_workers: int, visible: int) -> list[str | None]:
    """The device of each of ``n_workers`` workers for ``--devices spec``, round-robin; None: the study's own.

    ``spec`` is ``auto`` (every visible GPU, or the study's device where there is none), ``cuda``
    (every visible GPU, which must exist) or a list like ``cuda:0,cuda:1``. ``visible`` is how many
    GPUs this process sees. Wrong input is a ``UsageError`` saying how to fix it.
    """
    if n_workers < 1:
        raise UsageError(f"--workers must be at least 1 (got {n_workers})")
    name = spec.strip()
    if name in ("auto", "cuda"):
        if visible == 0:
            if name == "auto":
                return [None] * n_workers
            raise UsageError("--devices cuda: no CUDA device is visible on this machine; use --devices auto or leave it out")
        return [f"cuda:{i % visible}" for i in range(n_workers)]
    indices = []
    for item in name.split(","):
        index = cuda_index(item)
        if index is None:
            raise UsageError(f"--devices: {item.strip()!r} is not a GPU; give auto, cuda or a list like cuda:0,cuda:1")
        indices.append(index)
    if visible == 0:
        raise UsageError(f"--devices {name}: no CUDA device is visible on this machine; use --devices auto or leave it out")
    missing = [index for index in indices if index >= visible]
    if missing:
        raise UsageError(f"--devices: no cuda:{missing[0]} here; this machine has {visible} visible GPU(s), cuda:0 to cuda:{visible - 1}")
    return [f"cuda:{indices[i % len(indices)]}" for i in range(n_workers)]


def worker_devices(spec: str | None, n_workers: int, study_device: str) -> list[str | None]:
    """``assign_devices`` on this machine's GPUs; no ``--devices`` leaves every worker on ``study_device``.

    ``--device cpu`` (or mps) with ``--devices`` is a contradiction, and an error rather than a guess.
    """
    if spec is None:
        return [None] * n_workers
    if study_device not in ("auto", "cuda"):
        raise UsageError(f"--device {study_device} and --devices {spec} disagree; drop one of them")
    return assign_devices(spec, n_workers, visible_gpus())


def use_device(resolved: ResolvedSpec, device: str | None) -> ResolvedSpec:
    """``resolved`` with its trainer on ``device`` (None: unchanged), which must be present here.

    For ``cuda:N`` this process's current CUDA device becomes N too, so that calls which name no
    device (``torch.cuda.is_bf16_supported()``, say) ask the same GPU the trainer uses. The
    trainer's config is replaced after ``resolve``: its ``--device`` choices do not list ``cuda:N``.
    """
    import torch

    if device is None:
        return resolved
    try:
        chosen = resolve_device(device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if chosen.type == "cuda" and chosen.index is not None:
        torch.cuda.set_device(chosen)
    return dataclasses.replace(resolved, train_config=dataclasses.replace(resolved.train_config, device=device))


@dataclasses.dataclass(frozen=True)
class Launch:
    """How to start one worker process: its command line and its whole environment."""

    command: list[str]
    env: dict[str, str]


def worker_launches(
    study_name: str,
    output_dir: str,
    storage_url: str,
    threads: int,
    heartbeat: Heartbeat,
    devices: Sequence[str | None],
    environ: Mapping[str, str],
    quiet: bool = False,
) -> list[Launch]:
    """The ``hpsearch worker`` process to start for each entry of ``devices`` (None: the study's device).

    A worker for ``cuda:N`` sees only that GPU (``CUDA_VISIBLE_DEVICES``, set before the process
    exists, so before CUDA can start in it) and is told ``--device cuda``: its only GPU.
    """
    command = [
        sys.executable, "-m", "hpsearch.search.cli", "worker", "--study", study_name,
        "--output-dir", output_dir, "--threads", str(threads), "--no-progress", "--local-worker",
        *heartbeat_flags(heartbeat), *(["--quiet"] if quiet else []),
    ]
    # The URL goes through the environment, not the command line, where `ps` would show a password.
    # The BLAS pool (numpy's, which the GP sampler uses) gets the worker's share of the cores too,
    # unless the user sized it: a pool of every core in each worker oversubscribes them.
    env = {"OMP_NUM_THREADS": str(threads), **environ, STORAGE_ENV: storage_url}
    launches = []
    for device in devices:
        index = None if device is None else cuda_index(device)
        if index is None:
            launches.append(Launch(list(command), dict(env)))
        else:
            # This process's cuda:N, named as the machine knows it: a parent CUDA_VISIBLE_DEVICES renumbers.
            launches.append(Launch([*command, "--device", "cuda"], {**env, "CUDA_VISIBLE_DEVICES": physical_gpu(index, environ)}))
    return launches


def run_local_workers(
    orchestrator: Orchestrator,
    n_workers: int,
    devices: Sequence[str | None] | None = None,
    quiet: bool = False,
    threads: int | None = None,
) -> SearchOutcome:
    """Queue the search, then run it in this process and ``n_workers - 1`` worker processes.

    This process is one of the workers: it has already paid the seconds of start-up (imports,
    the task's data) that each new process pays, so its trials begin while the others start.
    The torch threads (``threads`` in all, default one per CPU core) are split evenly among the
    workers, and each worker process's BLAS pool with them (``OMP_NUM_THREADS``, unless set).
    ``devices`` (from ``worker_devices``) gives each worker its device; this process's, the first,
    is already in ``orchestrator``'s trainer config (``use_device``): torch has started here, so an
    environment variable would come too late. ``quiet`` starts the worker processes with ``--quiet``.
    """
    import torch

    devices = list(devices) if devices is not None else [None] * n_workers
    if len(devices) != n_workers:
        raise ValueError(f"{len(devices)} devices for {n_workers} workers")
    study, planned = orchestrator.create(orchestrator.resolved.n_trials)
    url = orchestrator.storage_url
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if planned == 0 and not running:
        orchestrator.echo(orchestrator.nothing_to_do(study))
        return SearchOutcome(study, url, 0, 0, idle=True)
    threads = max(1, (threads or os.cpu_count() or 1) // n_workers)
    # Only trials RUNNING elsewhere are left (a killed worker's, inside its grace period): this
    # process waits for them and runs their retries; other processes would only start up and exit.
    launches = [] if planned == 0 else worker_launches(
        study.study_name, orchestrator.spec.output_dir, url, threads, orchestrator.heartbeat, devices[1:], os.environ, quiet)
    # Trials already finished or running when this command began are not this command's to count.
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING}

    def finished_since_start() -> list[optuna.trial.FrozenTrial]:
        done = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL))
        return [t for t in done if t.number not in before]

    others = [subprocess.Popen(launch.command, env=launch.env) for launch in launches]
    # Under halving, the points that go on past a rung are trials of their own: the bar counts them too.
    total = halving_trials_left(study) if is_halving(study.pruner) else planned
    bar = tqdm(total=total, desc=f"{study.study_name} ({n_workers} workers)", unit="trial", disable=None if orchestrator.progress else True)
    torch.set_num_threads(threads)
    idle: list[subprocess.Popen] = []
    try:
        # work() returns when no trial waits or runs: a worker that died mid-trial has had its
        # trial failed and retried (here or in another worker) by then.
        orchestrator.work(study, on_trial_end=lambda: bar.update(len(finished_since_start()) - bar.n))
        # The others finish their trials. One still starting up when the last trial ends has
        # nothing left to do, and is stopped rather than waited for.
        while any(w.poll() is None for w in others):
            if not study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
                idle = [w for w in others if w.poll() is None]
                break
            try:
                next(w for w in others if w.poll() is None).wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            bar.update(len(finished_since_start()) - bar.n)
        if is_halving(study.pruner):
            end_at_what_ran(bar)
    except KeyboardInterrupt as stopped:  # the CLI's Interrupted, or a notebook's plain interrupt
        live = [w for w in others if w.poll() is None]
        if live:
            # Their own lines then say "preempted by SIGTERM", which the user did not send: say why.
            name = (interruption(stopped) or Interrupted("SIGINT")).signal_name
            print(f"hpsearch: {name}: stopping {len(live)} worker process(es) with SIGTERM, which hands "
                  "each one's trial back to the queue", file=sys.stderr, flush=True)
        raise
    finally:
        bar.close()
        for worker in others:
            if worker.poll() is None and worker in idle:
                # Nothing waits or runs, so an idle worker has no trial to stop: SIGTERM would make
                # it report an interruption that never happened, on this command's stderr.
                worker.kill()
            elif worker.poll() is None:
                worker.terminate()
        for worker in others:
            worker.wait()
    for worker in others:
        if worker not in idle and worker.returncode not in (0, EXIT_RUN_FAILED):
            # Its trial, if it had one, is in the study as FAIL (with a retry run by a survivor),
            # and counted below; the outcome counts the study's trials, not its workers.
            code = worker.returncode
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
            orchestrator.echo(f"Worker process {worker.pid} {how}.")
    ran = finished_since_start()
    return SearchOutcome(study, url, len(ran), sum(t.state == TrialState.FAIL for t in ran))
