"""Chaos run: a 16-trial study with 2 workers on PostgreSQL, the server restarted every 20 s.

Each round runs the same grid twice on a private PostgreSQL cluster (``tests/private_postgres.py``,
so the machine's shared server is never restarted), as ``hpsearch create`` + two ``hpsearch
worker`` processes with the default heartbeat settings:

* **calm**: nothing happens to the server;
* **chaos**: the server is restarted (a fast shutdown, which cuts every connection) every
  ``--every`` seconds until both workers have exited.

For the chaos run it prints the trials finished, the epochs trained twice and lost, and the
trials left RUNNING (``hpsearch.search.audit.audit_epochs``, from the epoch table and each
trial's checkpoint), the restarts and the workers' exit codes; and the wall time of each run with
the chaos/calm ratio. Goal: 16 finished, 0 twice, 0 lost, 0 RUNNING, at most 1.3x the calm run.
The sides alternate between rounds; ratios are medians over rounds. Needs root (the cluster runs
as the ``postgres`` user).

    python benchmarks/chaos_run.py                 # 1 round, restarts every 20 s
    python benchmarks/chaos_run.py --rounds 3
    python benchmarks/chaos_run.py --quick         # 4 trials, restarts every 8 s

``--scale`` is chaos at scale, for workers that share nothing but the database and an S3 store
(moto's server on 127.0.0.1, ``tests/s3_server.py``): a 200-point grid, 8 workers each in its own
empty folder, a random worker ``kill -9``'d every 15 s and a fresh one started in a new empty
folder in its place (as a scheduler would), one database restart and one 20 s S3 outage. The calm
side runs the same grid with the same workers and nothing done to them. Goal: every trial
finishes, 0 epochs trained twice or lost, 0 RUNNING, and every configuration's final value
identical to the calm run's (CPU, fp32).

    python benchmarks/chaos_run.py --scale         # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.private_postgres

import optuna
from optuna.trial import TrialState

from hpsearch.search.audit import audit_epochs
from tests.private_postgres import PrivateCluster
from tests.s3_server import MotoServer

HPSEARCH = [sys.executable, "-m", "hpsearch.search.cli"]


def grid(quick: bool) -> list[str]:
    sweep = ["lr:1e-3,3e-3", "embed_dim:8,16"] if quick else ["lr:1e-3,2e-3,3e-3,4e-3", "embed_dim:8,16,24,32"]
    return ["--models", "tfn_classifier", "--param_sweep", *sweep, "--pruner", "none",
            "--epochs", "6", "--dataset-size", "400", "--seq-len", "8", "--no-progress"]


def run_study(cluster: PrivateCluster, name: str, quick: bool, every: float | None, workdir: Path) -> dict:
    url, runs = cluster.url(), str(workdir / name)
    env = {**os.environ, "HPSEARCH_STORAGE": url, "PYTHONUNBUFFERED": "1"}
    subprocess.run([*HPSEARCH, "create", "--study", name, "--output-dir", runs, *grid(quick)], env=env, check=True,
                   capture_output=True)
    logs = [open(workdir / f"{name}-worker{i}.log", "w") for i in range(2)]  # noqa: SIM115  (closed below)
    start = time.perf_counter()
    workers = [subprocess.Popen([*HPSEARCH, "worker", "--study", name, "--threads", "1", "--no-progress"], env=env,
                                stdout=log, stderr=subprocess.STDOUT) for log in logs]
    restarts = 0
    next_restart = start + every if every else None
    while any(w.poll() is None for w in workers):
        if next_restart is not None and time.perf_counter() >= next_restart:
            cluster.restart()
            restarts += 1
            next_restart += every
        time.sleep(0.1)
    wall = time.perf_counter() - start
    for log in logs:
        log.close()
    audit = audit_epochs(url, name, runs)
    return {"wall": wall, "audit": audit, "restarts": restarts, "codes": [w.returncode for w in workers]}


SCALE_WORKERS, KILL_EVERY_S, DB_RESTART_AT_S, S3_OUTAGE_AT_S, S3_OUTAGE_S = 8, 15.0, 40.0, 70.0, 20.0
FAST_HEARTBEAT = ["--heartbeat-interval", "2", "--grace-period", "6"]


def scale_grid() -> list[str]:
    """200 tiny trials: 20 learning rates x 10 widths, 3 epochs each, fp32 so that values repeat exactly."""
    lrs = ",".join(f"{1e-3 * (1 + i / 10):.3g}" for i in range(20))
    widths = ",".join(str(4 * (i + 1)) for i in range(10))
    return ["--models", "tfn_classifier", "--param_sweep", f"lr:{lrs}", f"embed_dim:{widths}", "--pruner", "none",
            "--epochs", "3", "--dataset-size", "200", "--seq-len", "8", "--precision", "fp32", "--no-progress"]


class WorkerPool:
    """Worker processes that share nothing but the database and the store: each in a new empty folder."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name, self.env, self.workdir = name, env, workdir
        self.started: list[subprocess.Popen] = []
        self.exits: list[int] = []

    def start(self) -> None:
        folder = self.workdir / f"{self.name}-machine{len(self.started)}"
        folder.mkdir()
        with open(folder / "worker.log", "w") as log:
            self.started.append(subprocess.Popen(
                [*HPSEARCH, "worker", "--study", self.name, "--output-dir", ".", "--threads", "1", "--no-progress", "-q",
                 *FAST_HEARTBEAT], env=self.env, cwd=folder, stdout=log, stderr=subprocess.STDOUT))

    def alive(self) -> list[subprocess.Popen]:
        return [w for w in self.started if w.poll() is None]


def run_scale(cluster: PrivateCluster, s3: MotoServer, name: str, chaos: bool, workdir: Path) -> dict:
    url, artifacts = cluster.url(), f"s3://chaos/{name}"
    env = {**os.environ, **s3.env, "HPSEARCH_STORAGE": url, "PYTHONUNBUFFERED": "1"}
    subprocess.run([*HPSEARCH, "create", "--study", name, "--artifacts", artifacts, *scale_grid()], env=env, check=True,
                   capture_output=True, cwd=workdir)
    pool, rng, kills, events = WorkerPool(name, env, workdir), random.Random(0), 0, []
    start = time.perf_counter()
    for _ in range(SCALE_WORKERS):
        pool.start()
    next_kill, restarted, paused_at = start + KILL_EVERY_S, False, None
    while pool.alive():
        now = time.perf_counter()
        if chaos and now >= next_kill:
            victim = rng.choice(pool.alive())
            victim.kill()
            victim.wait()
            kills += 1
            pool.start()  # the scheduler's replacement, on a machine with none of the victim's files
            next_kill += KILL_EVERY_S
        if chaos and not restarted and now - start >= DB_RESTART_AT_S:
            cluster.restart()
            restarted = True
            events.append(f"database restarted at {now - start:.0f} s")
        if chaos and paused_at is None and now - start >= S3_OUTAGE_AT_S:
            s3.pause()
            paused_at = now
        if paused_at is not None and paused_at > 0 and now - paused_at >= S3_OUTAGE_S:
            s3.resume()
            events.append(f"S3 out {now - start - S3_OUTAGE_S:.0f}-{now - start:.0f} s")
            paused_at = -1.0
        time.sleep(0.2)
    if paused_at is not None and paused_at > 0:
        s3.resume()
        events.append("S3 outage cut short: every worker had exited")
    wall = time.perf_counter() - start
    audit = audit_epochs(url, name, str(workdir / "no-shared-folder"), artifacts=artifacts)
    study = optuna.load_study(study_name=name, storage=url)
    values = {tuple(sorted(t.params.items())): t.value for t in study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])}
    codes = [w.returncode for w in pool.started]
    return {"wall": wall, "audit": audit, "kills": kills, "events": events, "values": values,
            "exits": [c for c in codes if c != -9]}


def scale(workdir: Path) -> None:
    cluster, s3 = PrivateCluster(), MotoServer()
    try:
        s3.create_bucket("chaos")
        os.environ.update(s3.env)  # the audit reads the store from this process
        calm = run_scale(cluster, s3, "scalecalm", False, workdir)
        chaos = run_scale(cluster, s3, "scalechaos", True, workdir)
    finally:
        s3.stop()
        cluster.close()
    a = chaos["audit"]
    same = sum(1 for key, value in chaos["values"].items() if calm["values"].get(key) == value)
    print(f"calm: {len(calm['values'])} complete in {calm['wall']:.0f} s, exits {sorted(set(calm['exits']))}")
    print(f"chaos: {len(chaos['values'])} complete in {chaos['wall']:.0f} s ({chaos['wall'] / calm['wall']:.2f}x calm); "
          f"{chaos['kills']} workers kill -9'd and replaced; {'; '.join(chaos['events'])}")
    print(f"chaos audit: finished {a.finished}/{a.configurations}, trained twice {a.trained_twice}, lost {a.lost}, "
          f"left RUNNING {a.running}, unreadable checkpoints {len(a.unreadable)}; exits of the workers not killed "
          f"{sorted(set(chaos['exits']))}")
    print(f"final values identical to the calm run: {same}/{len(calm['values'])}")
    clean = (a.finished == a.configurations == len(calm["values"]) == same and not (a.trained_twice or a.lost or a.running)
             and set(chaos["exits"]) <= {0})
    print(f"logs in {workdir}. Goal (all finished, 0 twice, 0 lost, 0 RUNNING, values identical): "
          f"{'met' if clean else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between server restarts (default: 20)")
    parser.add_argument("--quick", action="store_true", help="4 trials, restarts every 8 s")
    parser.add_argument("--scale", action="store_true", help="chaos at scale: 200 trials, 8 workers, kills, a restart, an S3 outage")
    args = parser.parse_args()
    if args.scale:
        scale(Path(tempfile.mkdtemp(prefix="hpsearch-chaos-scale-")))
        return
    every = 8.0 if args.quick else args.every
    cluster = PrivateCluster()
    workdir = Path(tempfile.mkdtemp(prefix="hpsearch-chaos-"))
    ratios, outcomes = [], []
    try:
        for round_index in range(args.rounds):
            order = ["calm", "chaos"] if round_index % 2 == 0 else ["chaos", "calm"]
            results = {side: run_study(cluster, f"{side}{round_index}", args.quick, every if side == "chaos" else None, workdir)
                       for side in order}
            chaos, calm = results["chaos"], results["calm"]
            ratios.append(chaos["wall"] / calm["wall"])
            outcomes.append(chaos)
            a = chaos["audit"]
            print(f"round {round_index + 1}: calm {calm['wall']:.1f} s, chaos {chaos['wall']:.1f} s ({ratios[-1]:.2f}x), "
                  f"{chaos['restarts']} restarts; finished {a.finished}/{a.configurations}, trained twice {a.trained_twice}, "
                  f"lost {a.lost}, left RUNNING {a.running}; worker exits {chaos['codes']} (calm {calm['codes']})")
    finally:
        cluster.close()
    print(f"logs in {workdir}")
    worst = outcomes[0]["audit"]
    clean = all(o["audit"].finished == o["audit"].configurations and not (o["audit"].trained_twice or o["audit"].lost or o["audit"].running)
                and o["codes"] == [0, 0] for o in outcomes)
    ratio = statistics.median(ratios)
    verdict = "met" if clean and ratio <= 1.3 else "NOT met"
    print(f"chaos/calm wall time {ratio:.2f}x (median of {len(ratios)}); every trial finished, none twice, none lost, "
          f"none RUNNING: {clean} ({worst.finished}/{worst.configurations} in round 1). Goal (<= 1.3x, all clean): {verdict}")


if __name__ == "__main__":
    main()
