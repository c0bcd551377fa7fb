"""Time to a grid's first trial, and the command's peak memory, for grids of 4, 10^4 and 10^6 points.

Each size runs ``hpsearch --models cnn_classifier --param-sweep ... --n-trials 1 --epochs 1`` (tiny
data, checkpoints off, a new SQLite file in a temporary folder) as a subprocess, and times its start
to its ``Trial 0:`` line; the peak memory is the child's ``ru_maxrss``. The 4-point figure is what
starting Python, torch and the task costs; the others should not exceed it by more than a second or
two, whatever the grid's size (issue 20: a 10^6-point grid starts within 10 s).

    python benchmarks/grid_start.py
    PYTHONPATH=/tmp/before_pkg python benchmarks/grid_start.py 4 10000   # an older checkout, for comparison
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

SIZES = {
    4: ["embed_dim:4,5", "num_layers:1,2"],
    10_000: [f"embed_dim:{','.join(map(str, range(4, 14)))}", f"num_layers:{','.join(map(str, range(1, 11)))}",
             f"kernel_size:{','.join(map(str, range(1, 11)))}", f"lr:{','.join(f'{v}e-3' for v in range(1, 11))}"],
}
SIZES[1_000_000] = [*SIZES[10_000], f"dropout:{','.join(f'{v / 100:g}' for v in range(0, 50, 5))}",
                    f"weight_decay:{','.join(f'{v}e-4' for v in range(10))}"]
# Past this, the command is stopped: the figure is then "over" this many seconds.
LIMIT_S = 300


def first_trial(items: list[str], folder: str) -> tuple[float | None, int]:
    """Seconds from start to the first trial's line (None: not within LIMIT_S), and the peak memory in bytes."""
    command = [sys.executable, "-m", "hpsearch.search.cli", "--models", "cnn_classifier", "--param-sweep", *items,
               "--n-trials", "1", "--epochs", "1", "--dataset-size", "64", "--checkpoints", "none", "--no-progress",
               "--output-dir", folder, "--study-name", "grid_start"]
    env = {**{k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}, "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = None
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Trial 0:"):
            seen = time.monotonic() - started
            break
        if time.monotonic() - started > LIMIT_S:
            break
    if seen is None:
        process.kill()
    for _ in process.stdout:  # the one trial ends, and the results table is printed
        pass
    _, _, usage = os.wait4(process.pid, 0)
    return seen, usage.ru_maxrss * 1024


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or list(SIZES)
    print(f"{'grid points':>12}  {'first trial':>12}  {'peak memory':>12}")
    for size in sizes:
        with tempfile.TemporaryDirectory() as folder:
            seconds, memory = first_trial(SIZES[size], folder)
        shown = f"{seconds:.1f} s" if seconds is not None else f"> {LIMIT_S} s"
        print(f"{size:>12,}  {shown:>12}  {memory / 2**20:>9.0f} MiB", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
