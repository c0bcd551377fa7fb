"""Shared FLOPs counts: a search's trials of one model and hyperparameters trace it once, not once each.

Runs the same in-process search (``hpsearch.search.search``) twice per round, alternating:

* **shared** (what hpsearch does): the trials of one model and hyperparameter set share their
  FLOPs counts, so the first such trial traces each input shape and the rest reuse the counts;
* **a trace per trial** (the baseline, hpsearch before): every trial's ``FlopsMeter`` starts
  with counts of its own, as if the sharing were not there.

The search is a small grid that only changes ``lr`` (one architecture), so every trial after
the first is the case the sharing is for::

    search("tfn_classifier", "synthetic_tokens", {"lr": [20 values]}, epochs=1, dataset_size=400, seq_len=16)

Prints the median search wall time of each side, their ratio (median of per-round ratios) and
checks that both sides store the same ``flops.total`` for every trial.

    python benchmarks/flops_sharing.py               # 20 trials, 3 rounds
    python benchmarks/flops_sharing.py --trials 40 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from unittest import mock

from hpsearch.search import search
from hpsearch.trainers.flops import FlopsMeter

TASK_OPTIONS = {"dataset_size": 400, "seq_len": 16}


def run(trials: int, shared: bool) -> tuple[float, list[int]]:
    """Wall seconds of one search, and each trial's stored ``flops.total`` in trial order."""
    init = FlopsMeter.__init__

    def own_counts(self, model, *, counts=None, **kwargs):  # the baseline: no counts shared
        init(self, model, **kwargs)

    lrs = [round(1e-3 * (1 + i / trials), 6) for i in range(trials)]
    meter_init = init if shared else own_counts
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(FlopsMeter, "__init__", meter_init):
        start = time.perf_counter()
        study = search("tfn_classifier", "synthetic_tokens", {"lr": lrs}, task_options=TASK_OPTIONS, epochs=1,
                       precision="fp32", pruner="none", storage=f"sqlite:///{tmp}/flops.db", output_dir=tmp)
        wall = time.perf_counter() - start
    return wall, [t.user_attrs["flops.total"] for t in sorted(study.trials, key=lambda t: t.params["lr"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--trials", type=int, default=20, help="grid points, one architecture (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default %(default)s)")
    args = parser.parse_args(argv)
    run(2, shared=True)  # warms the imports, torch's jit tracer and the task's data
    sides = {"shared": True, "a trace per trial": False}
    walls: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(args.repeats):
        totals = {}
        for name in list(sides) if repeat % 2 == 0 else list(sides)[::-1]:
            wall, totals[name] = run(args.trials, sides[name])
            walls[name].append(wall)
        if totals["shared"] != totals["a trace per trial"]:
            sys.exit(f"the sides stored different flops.total: {totals}")
        print(f"round {repeat + 1}: " + "   ".join(f"{n}: {walls[n][-1]:.2f} s" for n in sides), flush=True)
    ratio = statistics.median(a / b for a, b in zip(walls["shared"], walls["a trace per trial"]))
    print(f"\n{args.trials} trials of one architecture, median of {args.repeats} rounds")
    for name in sides:
        wall = statistics.median(walls[name])
        print(f"{name:<20} {wall:7.2f} s  {wall / args.trials * 1e3:7.1f} ms/trial")
    print(f"shared / a trace per trial: {ratio:.2f}x the wall time; same flops.total on every trial")
    return 0


if __name__ == "__main__":
    sys.exit(main())
