"""Start-up: the wall time of short ``hpsearch`` commands, each a fresh process, beside ``import optuna`` and ``import torch``.

Builds one small study first (a one-epoch tiny search into a temporary SQLite file), then times,
in every round and in alternating order, each side as a fresh subprocess:

* ``python -c "import optuna"``: the baseline every figure is also given as a ratio to
* ``python -c "import torch"``: what any training process pays before its first step
* ``hpsearch --help``
* ``hpsearch studies --storage sqlite:///STUDY.db``
* ``hpsearch trials --study S --storage sqlite:///STUDY.db``
* the tiny search, each run into a new database::

      hpsearch --models tfn_classifier --epochs 1 --dataset-size 20 --seq-len 4 --no-progress --storage sqlite:///NEW.db

* ``hpsearch worker`` on the same search stored by ``hpsearch create`` (untimed, a new
  database each round), through a probe that notes when its first trial starts training
  (``Trainer.fit`` wrapped, so the trainer module, and torch, load first; the total is the same)
* for context, ``import torch`` and building an optimizer, which imports ``torch._dynamo``: any
  torch training process pays that before its first step

and prints medians, and medians of per-round ratios to ``import optuna``, so load on a shared
machine hits every side alike. Goals: ``--help`` at most 0.5 s; ``studies`` and ``trials`` at
most 1.0 s, without torch; a worker's first trial training at most 0.5 s after ``import torch``
would have finished. The same probe, run once more per command, lists the big packages each short
command imported and those loaded by the time the first trial trains.

    python benchmarks/startup.py               # 5 rounds
    python benchmarks/startup.py --repeats 9
    python benchmarks/startup.py --quick       # 1 round
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELP_GOAL, TABLES_GOAL, TRAINING_GOAL = 0.5, 1.0, 0.5
STUDY = "tfn_classifier-synthetic_tokens"
TINY = ["--models", "tfn_classifier", "--epochs", "1", "--dataset-size", "20", "--seq-len", "4"]
OPTIMIZER = "import torch; torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())"
BIG_PACKAGES = (
    "torch", "optuna", "sqlalchemy", "pandas", "numpy", "plotly", "fvcore", "torchmetrics", "scipy", "sklearn",
    "optuna_dashboard", "alembic", "torch._dynamo",
)
# Runs the CLI as the console script does, and says on stderr which big packages it loaded;
# with --first-fit also when (time.time(), comparable with the parent's clock) and with which
# packages loaded the first trial started to train.
PROBE = f"""
import sys, time
BIG = {BIG_PACKAGES!r}
loaded = lambda: ",".join(p for p in BIG if p in sys.modules) or "-"
if sys.argv[1] == "--first-fit":
    del sys.argv[1]
    from hpsearch.trainers import trainer
    fit = trainer.Trainer.fit
    def first_fit(self, *args, **kwargs):
        print(f"FIRST_FIT {{time.time()}} {{loaded()}}", file=sys.stderr)
        trainer.Trainer.fit = fit
        return fit(self, *args, **kwargs)
    trainer.Trainer.fit = first_fit
from hpsearch.search.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(f"LOADED {{loaded()}}", file=sys.stderr)
sys.exit(code)
"""


def hpsearch_command() -> list[str]:
    """The ``hpsearch`` console script of this interpreter's environment, else ``python -m``."""
    script = Path(sys.executable).with_name("hpsearch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hpsearch.search.cli"]


def run(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds of ``command`` in a fresh process, the clock (``time.time()``) at its launch, and its stderr."""
    launched, start = time.time(), time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return wall, launched, done.stderr


def field(stderr: str, tag: str) -> list[str]:
    line = next(line for line in stderr.splitlines() if line.startswith(tag + " "))
    return line.split(" ")[1:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=5, help="rounds (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    hpsearch = hpsearch_command()
    python = [sys.executable, "-c"]
    tmp = Path(tempfile.mkdtemp(prefix="hpsearch-startup-"))
    try:
        study_url = f"sqlite:///{tmp / 'study.db'}"
        run([*hpsearch, *TINY, "--no-progress", "--storage", study_url], tmp)  # the study the tables read; warms the caches too
        runs = iter(range(1_000_000))

        def fresh_url() -> str:
            return f"sqlite:///{tmp / f'search-{next(runs)}.db'}"

        def created_url() -> str:
            url = fresh_url()
            run([*hpsearch, "create", *TINY, "--storage", url], tmp)
            return url

        sides = {
            "import optuna": lambda: [*python, "import optuna"],
            "import torch": lambda: [*python, "import torch"],
            "import torch + an optimizer": lambda: [*python, OPTIMIZER],
            "hpsearch --help": lambda: [*hpsearch, "--help"],
            "hpsearch studies": lambda: [*hpsearch, "studies", "--storage", study_url],
            "hpsearch trials": lambda: [*hpsearch, "trials", "--study", STUDY, "--storage", study_url],
            "tiny search": lambda: [*hpsearch, *TINY, "--no-progress", "--storage", fresh_url()],
            "hpsearch worker, probed": lambda: [*python, PROBE, "--first-fit", "worker", "--study", STUDY, "--no-progress",
                                                "--storage", created_url()],
        }
        names = list(sides)
        walls: dict[str, list[float]] = {name: [] for name in names}
        to_first_fit: list[float] = []
        loaded: dict[str, str] = {}
        print(f"{len(names)} sides, {args.repeats} round(s), each a fresh process; the tiny search: hpsearch {' '.join(TINY)} --no-progress")
        for repeat in range(args.repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                wall, launched, stderr = run(sides[name](), tmp)
                walls[name].append(wall)
                if name == "hpsearch worker, probed":
                    clock, loaded["worker's first trial trains with"] = field(stderr, "FIRST_FIT")
                    to_first_fit.append(float(clock) - launched)
            print(f"round {repeat + 1}: " + "  ".join(f"{n}: {walls[n][-1]:.2f}s" for n in names), flush=True)
        for name, argv in (("hpsearch --help", ["--help"]), ("hpsearch studies", ["studies", "--storage", study_url]),
                           ("hpsearch trials", ["trials", "--study", STUDY, "--storage", study_url])):
            loaded[name] = field(run([*python, PROBE, *argv], tmp)[2], "LOADED")[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio(name: str) -> float:
        return statistics.median(a / b for a, b in zip(walls[name], walls["import optuna"]))

    def median(name: str) -> float:
        return statistics.median(walls[name])

    print(f"\nmedian of {args.repeats} round(s)")
    print(f"{'side':<32} {'wall s':>7} {'/ import optuna':>15}")
    for name in names:
        print(f"{name:<32} {median(name):7.2f} {ratio(name):14.2f}x")
    fit_ratio = statistics.median(f / b for f, b in zip(to_first_fit, walls["import optuna"]))
    print(f"{'  its first trial starts training':<32} {statistics.median(to_first_fit):7.2f} {fit_ratio:14.2f}x")
    after_torch = statistics.median(f - t for f, t in zip(to_first_fit, walls["import torch"]))
    after_optimizer = statistics.median(f - t for f, t in zip(to_first_fit, walls["import torch + an optimizer"]))
    print("\nbig packages imported")
    for name, packages in sorted(loaded.items(), key=lambda item: item[0].startswith("worker")):
        print(f"  {name + ':':<32} {packages.replace(',', ', ')}")

    verdicts = [
        (median("hpsearch --help"), HELP_GOAL, "hpsearch --help"),
        (median("hpsearch studies"), TABLES_GOAL, "hpsearch studies"),
        (median("hpsearch trials"), TABLES_GOAL, "hpsearch trials"),
        (after_torch, TRAINING_GOAL, "a worker's first training after import torch would have finished"),
    ]
    print()
    for value, goal, what in verdicts:
        print(f"{what}: {value:.2f}s ({'meets' if value <= goal else 'MISSES'} the <= {goal}s goal)")
    print(f"  (after import torch + an optimizer: {after_optimizer:.2f}s)")
    torch_free = all("torch" not in loaded[n].split(",") for n in ("hpsearch --help", "hpsearch studies", "hpsearch trials"))
    print(f"--help, studies and trials {'import no torch' if torch_free else 'IMPORT TORCH'}")
    return 0 if torch_free and all(value <= goal for value, goal, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
