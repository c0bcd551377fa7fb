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
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.private_postgres

from hpsearch.search.audit import audit_epochs
from tests.private_postgres import PrivateCluster

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between server restarts (default: 20)")
    parser.add_argument("--quick", action="store_true", help="4 trials, restarts every 8 s")
    args = parser.parse_args()
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
