"""Scale: 8, 16 and 32 worker processes on one study, straight to PostgreSQL and through ``hpsearch proxy``.

Each run makes a new database on the PostgreSQL server (``--admin-url``, dropped after), queues
a sampled study of ``trials`` trials with ``hpsearch create`` and starts N ``hpsearch worker``
processes at once (one torch thread each), as a job array would; with ``--proxy`` an ``hpsearch
proxy`` stands in front of the database and the workers pass ``--storage grpc://...``. A trial
is one epoch of ``tests/search/paced_plugin.py``'s model, whose ten forward passes sleep 100 ms
each: a 1 s trial that mostly waits, so that 32 workers fit on 2 cores and what is measured is
the orchestration around the trial, not the CPU. Per run it prints:

* **trials/s**: trials / (last trial's end - first trial's start);
* **training share**: the epochs' time (``epoch_seconds`` in ``hpsearch_epoch_metrics``) over
  the workers' busy time, each worker from its first trial's start to its last trial's end
  (process start-up, which a long-lived worker pays once, is reported apart as **start s**);
* **orchestration ms/trial**: (busy time - epoch time) / trials: taking, planning, building the
  model, the FLOPs count, checkpoints, the records and the heartbeat;
* **steady** share and ms: the same over the trials that start once every worker's first trial
  has ended: a first trial alone pays the once-per-process costs (the ``--precision auto`` probe,
  the first FLOPs count), and while a worker starts, its imports (about 4 CPU-seconds: torch,
  Optuna, SQLAlchemy) take the CPU from the others' trials. It is the rate of workers that run
  many trials, which is what the goal is judged on; **steady n** is how many trials it counts;
* **peak connections**: the most rows ``pg_stat_activity`` held for the run's database, sampled
  every 0.1 s;
* **lost / duplicated / RUNNING** at the end: trials not COMPLETE plus epochs lost, epochs trained
  twice, trials left RUNNING (``hpsearch.search.audit.audit_epochs``: the epoch table and checkpoints).

A one-worker direct run first is the baseline: each run's trials/s is also given as a share of N
times the baseline's (scaling efficiency). Goal: at 32 workers, at least 90% of worker time
spent training, with 0 lost, duplicated or RUNNING.

``--modes bare`` is the floor under any Optuna-based worker on this machine: N processes of a bare
Optuna loop on the same PostgreSQL server (``study.optimize`` with the same random sampler: ask,
one ``suggest_float``, a 1 s ``time.sleep`` for the training, one user attribute naming the
worker and the seconds slept, tell), with no model, checkpoint, epoch row or heartbeat. Its
training share is the sleep over the same busy time. Where the bare loop is under the goal, the
machine, not hpsearch, is what stops it.

    python benchmarks/scale.py                       # 8, 16, 32 workers; direct and proxy; 4 trials a worker, at least 64
    python benchmarks/scale.py --workers 8 --modes proxy --trials-per-worker 2
    python benchmarks/scale.py --workers 32 --modes bare direct   # the bare Optuna floor beside hpsearch
    python benchmarks/scale.py --workers 32 --modes proxy --proxy-processes 1 2 --repeat 3   # proxy processes, alternated
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from hpsearch.storage.optuna_seam import stored_now  # the clock Optuna's trial datetimes are in

GOAL_TRAINING_SHARE = 0.90
# The fault tests' model: each forward pass sleeps pace_ms, so trials mostly wait.
PLUGIN = Path(__file__).resolve().parents[1] / "tests" / "search" / "paced_plugin.py"
STUDY = "scale"
# Ten forward passes of 100 ms: 8 training steps of 8 samples and 2 validation batches.
TRIAL = ["--plugin", str(PLUGIN), "--models", "paced_classifier", "--param_sweep", "lr:1e-4..1e-2:log", "embed_dim:8", "pace_ms:100",
         "--sampler", "random", "--pruner", "none", "--epochs", "1", "--dataset-size", "64", "--batch-size", "8",
         "--seq-len", "8", "--no-progress"]
HPSEARCH = [str(Path(sys.executable).with_name("hpsearch"))]
BARE_TRIAL_S = 1.0  # the bare loop's "training": what the paced trial's ten forward passes sleep
BARE_ATTR = "bare"
Span = tuple[datetime, datetime, float]  # a trial's start, its end, and the seconds of it spent training


@dataclass
class Figures:
    workers: int
    mode: str
    trials: int
    wall_s: float
    trials_per_s: float
    training_share: float
    orchestration_ms: float
    steady_share: float  # the trials once every worker has run one: what long-lived workers run at
    steady_ms: float
    steady_trials: int
    start_s: float
    peak_connections: int
    lost: int
    duplicated: int
    running: int
    exit_codes: list[int]


def new_database(admin_url: str) -> str:
    name = f"hpsearch_scale_{uuid.uuid4().hex[:10]}"
    with sa.create_engine(_psycopg(admin_url), isolation_level="AUTOCOMMIT").connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = sa.create_engine(_psycopg(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n "
                                   "AND pid <> pg_backend_pid()"), {"n": name})
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    engine.dispose()


def _psycopg(url: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


class ConnectionPeak(threading.Thread):
    """Samples ``pg_stat_activity`` for one database every 0.1 s; ``peak`` is the most backends seen (its own excluded)."""

    def __init__(self, admin_url: str, database: str) -> None:
        super().__init__(daemon=True)
        self.engine = sa.create_engine(_psycopg(admin_url), pool_size=1)
        self.database, self.peak, self.stop = database, 0, threading.Event()

    def run(self) -> None:
        query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()")
        with self.engine.connect() as connection:
            while not self.stop.wait(0.1):
                self.peak = max(self.peak, connection.execute(query, {"n": self.database}).scalar_one())
                connection.commit()

    def finish(self) -> int:
        self.stop.set()
        self.join()
        self.engine.dispose()
        return self.peak


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(admin_url: str, workers: int, trials: int, mode: str, folder: Path, proxy_processes: int = 1) -> Figures:
    url = new_database(admin_url)
    env = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proxy = None
    if mode == "bare":
        try:
            return run_bare(admin_url, url, workers, trials, env, folder)
        finally:
            drop_database(admin_url, url)
    try:
        subprocess.run([*HPSEARCH, "create", "--study", STUDY, "--storage", url, "--n-trials", str(trials),
                        "--output-dir", str(folder / "runs"), *TRIAL], env=env, cwd=folder, check=True, capture_output=True)
        storage = url
        if mode == "proxy":
            port = free_port()
            proxy = subprocess.Popen([*HPSEARCH, "proxy", "--storage", url, "--port", str(port), "--processes", str(proxy_processes)],
                                     env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            storage = f"grpc://127.0.0.1:{port}"
            _wait_for_port(port)
        command = [*HPSEARCH, "worker", "--study", STUDY, "--storage", storage, "--threads", "1", "-q", "--no-progress"]
        started, wall, peak_connections, codes = run_processes(admin_url, url, command, workers, env, folder)
        label = f"proxy/{proxy_processes}" if mode == "proxy" and proxy_processes > 1 else mode
        return measure(url, folder / "runs", workers, trials, label, wall, started, peak_connections, codes)
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        drop_database(admin_url, url)


def run_processes(
    admin_url: str, url: str, command: list[str], workers: int, env: dict[str, str], folder: Path
) -> tuple[datetime, float, int, list[int]]:
    """Start ``workers`` processes of ``command`` at once and wait for all: when, wall seconds, peak connections, exit codes."""
    peak = ConnectionPeak(admin_url, make_url(url).database)
    peak.start()
    started = stored_now()
    procs = [subprocess.Popen(command, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(workers)]
    codes = []
    for proc in procs:
        _, err = proc.communicate()
        codes.append(proc.returncode)
        if proc.returncode:
            print(f"  worker exit {proc.returncode}: {err.strip().splitlines()[-1:]}", file=sys.stderr)
    wall = (stored_now() - started).total_seconds()
    return started, wall, peak.finish(), codes


def run_bare(admin_url: str, url: str, workers: int, trials: int, env: dict[str, str], folder: Path) -> Figures:
    """N bare Optuna loops (``bare_worker``) on a new study at ``url``: the floor under the worker's orchestration."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name=STUDY, storage=url, sampler=optuna.samplers.RandomSampler())
    command = [sys.executable, __file__, "--bare-worker", url, "--bare-trials", str(trials)]
    started, wall, peak_connections, codes = run_processes(admin_url, url, command, workers, env, folder)
    from optuna.trial import TrialState

    all_trials = optuna.load_study(study_name=STUDY, storage=url).get_trials(deepcopy=False)
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    by_worker: dict[str, list[Span]] = defaultdict(list)
    for t in complete:
        attr = t.user_attrs[BARE_ATTR]
        by_worker[attr["worker"]].append((t.datetime_start, t.datetime_complete, attr["slept"]))
    running = sum(t.state == TrialState.RUNNING for t in all_trials)
    return Figures(workers, "bare", len(all_trials), wall, *worker_time(by_worker, started), peak_connections,
                   len(all_trials) - len(complete), 0, running, codes)


def bare_worker(url: str, trials: int) -> None:
    """A bare Optuna loop: ask, one parameter, sleep ``BARE_TRIAL_S``, one attribute, tell; until the study holds ``trials``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=STUDY, storage=url, sampler=optuna.samplers.RandomSampler())
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        began = time.perf_counter()
        time.sleep(BARE_TRIAL_S)
        trial.set_user_attr(BARE_ATTR, {"worker": worker, "slept": time.perf_counter() - began})
        return lr

    study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(trials, states=None)])


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("the proxy did not start")


def measure(
    url: str, output_dir: Path, workers: int, trials: int, mode: str, wall: float, started: datetime, peak: int, codes: list[int]
) -> Figures:
    import optuna
    from optuna.trial import TrialState

    from hpsearch.search.audit import audit_epochs
    from hpsearch.storage.epoch_metrics import EpochMetricsTable

    study = optuna.load_study(study_name=STUDY, storage=url)
    all_trials = study.get_trials(deepcopy=False)
    table = EpochMetricsTable(url)
    rows = table.frame(STUDY)
    table.close()
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    # Epochs trained twice or lost, and trials left RUNNING, from the epoch table and the checkpoints.
    audit = audit_epochs(url, STUDY, str(output_dir))
    epoch_seconds = rows.groupby("number")["epoch_seconds"].sum()
    by_worker: dict[str, list[Span]] = defaultdict(list)
    for trial in complete:
        span = (trial.datetime_start, trial.datetime_complete, float(epoch_seconds.get(trial.number, 0.0)))
        by_worker[trial.user_attrs.get("worker", "?")].append(span)
    return Figures(workers, mode, trials, wall, *worker_time(by_worker, started), peak,
                   trials - len(complete) + audit.lost, audit.trained_twice, audit.running, codes)


def worker_time(by_worker: dict[str, list[Span]], started: datetime) -> tuple[float, float, float, float, float, int, float]:
    """From each worker's trials: trials/s, the training share and orchestration ms per trial, both
    again over the trials that start once every worker's first trial has ended (steady) with their
    count, and the median start-up from ``started``."""

    def totals(spans: dict[str, list[Span]]) -> tuple[float, float, int]:
        busy = sum((max(e for _, e, _ in s) - min(b for b, _, _ in s)).total_seconds() for s in spans.values() if s)
        return busy, sum(x for s in spans.values() for _, _, x in s), sum(len(s) for s in spans.values())

    busy, training, count = totals(by_worker)
    # A worker's first trial also pays what a process does once (the precision probe, the first
    # FLOPs count, warm caches), and while any worker is still starting, its imports take the CPU
    # from the others' trials. The steady state of long-lived workers is from the moment the last
    # worker's first trial ended: the trials that start from then on.
    warm = max(min(e for _, e, _ in s) for s in by_worker.values() if s)
    steady_busy, steady_training, steady_count = totals({w: [x for x in s if x[0] >= warm] for w, s in by_worker.items()})
    spans = [span for s in by_worker.values() for span in s]
    first, last = min(b for b, _, _ in spans), max(e for _, e, _ in spans)
    starts = [(min(b for b, _, _ in s) - started).total_seconds() for s in by_worker.values()]
    return (count / (last - first).total_seconds(), training / busy if busy else 0.0, 1000 * (busy - training) / max(count, 1),
            steady_training / steady_busy if steady_busy else 0.0,
            1000 * (steady_busy - steady_training) / max(steady_count, 1), steady_count, statistics.median(starts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default=os.environ.get("HPSEARCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="a PostgreSQL URL allowed to create databases (default: %(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--modes", nargs="+", choices=["direct", "proxy", "bare"], default=["direct", "proxy"],
                        help="direct: workers straight to PostgreSQL; proxy: through hpsearch proxy; bare: a bare Optuna loop")
    parser.add_argument("--proxy-processes", type=int, nargs="+", default=[1], metavar="N",
                        help="hpsearch proxy --processes in the proxy runs (mode proxy/N in the table); several: a run of each "
                        "in turn, alternated with --repeat (default: 1)")
    parser.add_argument("--repeat", type=int, default=1, help="run every setting this many times, in turn (default: 1)")
    parser.add_argument("--trials-per-worker", type=int, default=4)
    parser.add_argument("--min-trials", type=int, default=64)
    parser.add_argument("--bare-worker", metavar="URL", help=argparse.SUPPRESS)  # one process of --modes bare
    parser.add_argument("--bare-trials", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_worker:
        bare_worker(args.bare_worker, args.bare_trials)
        return 0

    results: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="hpsearch-scale-") as tmp:
        _mkdir(Path(tmp) / "baseline")
        baseline = run(args.admin_url, 1, 8, "direct", Path(tmp) / "baseline")
        print(_header())
        print(_line(baseline, baseline))
        settings = [(workers, mode, processes) for workers in args.workers for mode in args.modes
                    for processes in (args.proxy_processes if mode == "proxy" else [1])]
        for repeat in range(args.repeat):
            for workers, mode, processes in settings:
                folder = Path(tmp) / f"{mode}-{workers}-{processes}-{repeat}"
                _mkdir(folder)
                trials = max(args.min_trials, workers * args.trials_per_worker)
                figures = run(args.admin_url, workers, trials, mode, folder, processes)
                results.append(figures)
                print(_line(figures, baseline), flush=True)
    _verdict(results, baseline)
    return 0


def _mkdir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)


def _header() -> str:
    return (f"{'workers':>7} {'mode':>7} {'trials':>6} {'wall s':>7} {'trials/s':>8} {'vs N x 1':>8} {'training':>8} "
            f"{'orch ms/trial':>13} {'steady':>7} {'ms':>5} {'n':>5} {'start s':>7} {'peak conn':>9} {'lost/dup/RUNNING':>16} exits")


def _line(f: Figures, baseline: Figures) -> str:
    efficiency = f.trials_per_s / (f.workers * baseline.trials_per_s)
    exits = ",".join(sorted({str(c) for c in f.exit_codes}))
    return (f"{f.workers:>7} {f.mode:>7} {f.trials:>6} {f.wall_s:>7.1f} {f.trials_per_s:>8.2f} {efficiency:>8.0%} "
            f"{f.training_share:>8.1%} {f.orchestration_ms:>13.0f} {f.steady_share:>7.1%} {f.steady_ms:>5.0f} {f.steady_trials:>5} {f.start_s:>7.1f} {f.peak_connections:>9} "
            f"{f'{f.lost}/{f.duplicated}/{f.running}':>16} {exits}")


def _verdict(results: list[Figures], baseline: Figures) -> None:
    print(f"\nbaseline (1 worker, direct): {baseline.trials_per_s:.2f} trials/s, {baseline.orchestration_ms:.0f} ms "
          "orchestration per trial; 'vs N x 1' is trials/s over N times that")
    clean = all(f.lost == f.duplicated == f.running == 0 and set(f.exit_codes) == {0} for f in results)
    most = max(r.workers for r in results)
    by_mode: dict[str, list[Figures]] = defaultdict(list)
    for f in results:
        if f.workers == most:
            by_mode[f.mode].append(f)
    for mode, runs in by_mode.items():
        steady = statistics.median(f.steady_share for f in runs)
        shares = f", the median of {len(runs)} runs: {', '.join(f'{f.steady_share:.1%}' for f in runs)}" if len(runs) > 1 else ""
        if mode == "bare":
            print(f"{most} bare Optuna loops (the floor, no hpsearch): {steady:.1%} of worker time sleeping through the "
                  f"trials once every worker had run one{shares}; hpsearch can reach at most that here")
            continue
        ok = steady >= GOAL_TRAINING_SHARE and clean
        print(f"{most} workers, {mode}: {statistics.median(f.training_share for f in runs):.1%} of worker time training, "
              f"{steady:.1%} once every worker had run one{shares} (goal {GOAL_TRAINING_SHARE:.0%}); {'PASS' if ok else 'FAIL'}")
    print("0 lost, duplicated or RUNNING in every run, every worker exit 0" if clean else "NOT CLEAN: see the table")
    cost = baseline.steady_ms / 1000
    print(f"Extrapolation: orchestration is CPU work in each worker ({baseline.steady_ms:.0f} ms a trial in the one-worker "
          f"steady state here). With a core per worker it stays that, so T-second trials spend about T / (T + {cost:.2f}) "
          f"training: {1 / (1 + cost):.0%} at 1 s, {10 / (10 + cost):.0%} at 10 s, whatever N. Here N workers share 2 cores "
          "(and whatever else runs), so each trial's orchestration waits its turn and the share falls with N. "
          "Connections: about 2 per worker straight to PostgreSQL (N x 2 against max_connections), and the proxy's pool "
          "(at most 15) behind it, whatever N.")

if __name__ == "__main__":
    sys.exit(main())
