"""Queueing under concurrency, and the time to a large grid's first trial: real ``hpsearch`` processes on real databases.

The racing processes import hpsearch and torch first, then wait for one start file, so that
their queueing collides within milliseconds instead of being spread by seconds of imports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.storage.epoch_metrics import EpochMetricsTable

GRID = ["--models", "tfn_classifier", "--param-sweep", "embed_dim:8,16", "lr:1e-3,3e-3"]
BUDGET = ["--models", "tfn_classifier", "--param-sweep", "lr:1e-4..1e-2:log", "--n-trials", "6"]
TINY = ["--epochs", "1", "--dataset-size", "64", "--no-progress", "--quiet", "--checkpoints", "none"]
RACERS = 8

# Imports everything a command needs, waits for the start file, then runs the real CLI entry point.
LAUNCHER = """
import os, sys, time
import torch, optuna
import hpsearch.search.cli as cli
import hpsearch.search.orchestrator, hpsearch.search.worker_cli, hpsearch.search.objective
start = sys.argv[1]
while not os.path.exists(start):
    time.sleep(0.002)
sys.exit(cli.main(sys.argv[2:]))
"""


def race(commands: list[list[str]], cwd: Path, env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Start every command, let them import, then release them at once; their results, in order."""
    start = cwd / "start"
    processes = [
        subprocess.Popen([sys.executable, "-c", LAUNCHER, str(start), *command], cwd=cwd, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    time.sleep(8 if len(commands) > 2 else 4)  # the imports, on two shared cores
    start.touch()
    results = []
    for command, process in zip(commands, processes):
        out, err = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return results


def one_line_or_success(result: subprocess.CompletedProcess) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0 or len(lines) == 1, (result.args, result.returncode, result.stderr)


@pytest.fixture
def race_env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}, "OMP_NUM_THREADS": "1"}


@pytest.fixture(params=["postgres_new", "postgres_existing", "sqlite_new"])
def race_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgres_new":
        yield request.getfixturevalue("empty_postgres_database")
    elif request.param == "postgres_existing":
        yield request.getfixturevalue("postgres_url")
    else:
        yield f"sqlite:///{tmp_path / 'race.db'}"


@pytest.mark.parametrize("search", ["grid", "budget"])
def test_creates_workers_and_searches_started_at_once_queue_the_work_once(
    search: str, race_url: str, study_name: str, tmp_path: Path, race_env: dict[str, str]
) -> None:
    what = GRID if search == "grid" else BUDGET
    study_args = [*what, *TINY, "--study-name", study_name, "--storage", race_url, "--output-dir", str(tmp_path)]
    worker = ["worker", "--study", study_name, "--storage", race_url, "--no-progress", "--quiet"]
    # Creates queue; searches queue and train; workers train what they find (or say in one line that
    # there is no study yet). Every kind races every other.
    commands = [["create", *study_args]] * 3 + [study_args] * 3 + [worker] * 2
    results = race(commands, tmp_path, race_env)
    for result in results:
        one_line_or_success(result)
    assert sum(r.returncode == 0 for r in results[:6]) == 6, [r.stderr for r in results[:6]]

    study = optuna.load_study(study_name=study_name, storage=race_url)
    trials = study.get_trials(deepcopy=False)
    expected = 4 if search == "grid" else 6
    assert len(trials) == expected, [(t.number, t.state, t.params) for t in trials]
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    if search == "grid":
        assert Counter(tuple(sorted(t.params.items())) for t in trials).most_common(1)[0][1] == 1  # each point once
    table = EpochMetricsTable(race_url)
    try:
        epochs = table.frame(study_name)
    finally:
        table.close()
    assert sorted(epochs["number"]) == sorted(t.number for t in trials)  # one epoch each: none trained twice


# Six items of ten values: 10^6 points of a cheap model (ten trainer and model settings).
MILLION = [
    "--models", "cnn_classifier", "--param-sweep",
    "embed_dim:" + ",".join(str(v) for v in range(4, 14)),
    "num_layers:" + ",".join(str(v) for v in range(1, 11)),
    "kernel_size:" + ",".join(str(v) for v in range(1, 11)),
    "dropout:" + ",".join(f"{v / 100:g}" for v in range(0, 50, 5)),
    "lr:" + ",".join(f"{v}e-3" for v in range(1, 11)),
    "weight_decay:" + ",".join(f"{v}e-4" for v in range(10)),
]
SMALL = ["--models", "cnn_classifier", "--param-sweep", "embed_dim:4,5", "num_layers:1,2"]


# Runs the command and then prints its peak memory and CPU seconds. A child's ru_maxrss counts its
# parent's resident memory at the exec (Linux keeps the high-water mark across it), so read straight from
# pytest's worker it counted the worker too: 1 GiB under the whole suite against the command's own 384 MiB.
PEAK_MEMORY_LAUNCHER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print('peak KiB', usage.ru_maxrss, 'cpu s', usage.ru_utime + usage.ru_stime, flush=True); sys.exit(code)"
)


def time_to_first_trial(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, float]:
    """Seconds from the command's start to its first trial's line, the command's peak memory (bytes) and its CPU seconds."""
    command = [sys.executable, "-c", PEAK_MEMORY_LAUNCHER, sys.executable, "-m", "hpsearch.search.cli", *args]
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    # A grid queued up front takes an hour to start: fail in a minute (the launcher and the command both).
    stop = threading.Timer(60, os.killpg, (process.pid, signal.SIGKILL))
    stop.start()
    first = None
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if first is None and line.startswith("Trial 0:"):
            first = time.monotonic() - started
    process.wait()
    stop.cancel()
    assert process.returncode == 0, "".join(lines)
    assert first is not None, "".join(lines)
    assert lines[-1].startswith("peak KiB "), "".join(lines)
    _, _, peak_kib, _, _, cpu = lines[-1].split()
    return first, int(peak_kib) * 1024, float(cpu)


def test_a_million_point_grid_starts_its_first_trial_as_soon_as_a_small_one(tmp_path: Path, race_env: dict[str, str]) -> None:
    common = ["--epochs", "1", "--dataset-size", "64", "--no-progress", "--checkpoints", "none", "--n-trials", "1"]
    small, _, small_cpu = time_to_first_trial(
        [*SMALL, *common, "--study-name", "small", "--output-dir", str(tmp_path / "s")], tmp_path, race_env)
    large, memory, large_cpu = time_to_first_trial(
        [*MILLION, *common, "--study-name", "large", "--output-dir", str(tmp_path / "l")], tmp_path, race_env)
    print(f"time to first trial: 4 points {small:.1f} s, 10^6 points {large:.1f} s; "
          f"CPU {small_cpu:.1f} s and {large_cpu:.1f} s; peak memory {memory / 2**20:.0f} MiB")
    # CPU seconds, not wall time: under the whole suite the other workers' load slowed the large run's
    # wall clock 7 times (a 10 s gap that was 0.2 s alone), while a grid built up front costs CPU anywhere.
    assert large_cpu - small_cpu < 5, (small_cpu, large_cpu)
    assert memory < 2**30
    study = optuna.load_study(study_name="large", storage=f"sqlite:///{tmp_path / 'l' / 'hpsearch.db'}")
    assert len(study.get_trials(deepcopy=False)) <= 64  # --n-trials 1 queues a batch, not the grid
