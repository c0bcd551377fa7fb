"""FLOPs meter overhead: the same seeded trial with and without a ``FlopsMeter``.

Trains ``tfn_classifier`` (defaults) on ``synthetic_tokens`` (defaults) with the default trainer
settings, alternating runs without and with the meter (the order flips every repeat, so a
drift in machine load hits both alike), and prints:

* the median ``Trainer.fit`` time of each, the overhead ratio of the medians and the median of
  the per-pair ratios ``with / without - 1`` (pairs run back to back, so drift cancels);
* the time spent inside ``FlopsMeter.observe`` (and ``stats``) as a share of the same metered
  trial's fit time, median over trials: free of the run-to-run noise of wall-clock times on a
  shared machine, since load slows both alike. It is an upper bound: a trace runs the forward
  on a new shape first, warming caches the trainer's own pass then finds warm;
* the same for the first (cold) pair, separately: the first trace in a process also warms up
  torch's jit tracer, which later trials in the same process don't pay again.

It also checks that both runs of a pair give the same losses and metrics (the meter must not
change training). Target: overhead at most 1% of training time.

    python benchmarks/flops_overhead.py                # 5 timed pairs after one cold pair
    python benchmarks/flops_overhead.py --repeats 5 --epochs 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hpsearch.models import build_model
from hpsearch.trainers.config import TrainConfig
from hpsearch.trainers.flops import FlopsMeter
from hpsearch.trainers.records import EpochRecord
from hpsearch.trainers.tasks import build_task
from hpsearch.trainers.trainer import Trainer, seed_everything

_TIMING_FIELDS = ("epoch_seconds", "samples_per_second", "peak_memory_bytes")


class TimedMeter(FlopsMeter):
    """A ``FlopsMeter`` that adds up the time spent in its own methods."""

    def __init__(self, model: torch.nn.Module) -> None:
        start = time.perf_counter()
        super().__init__(model)
        self.own_seconds = time.perf_counter() - start

    def observe(self, inputs: torch.Tensor, seconds: float, training: bool) -> None:
        start = time.perf_counter()
        super().observe(inputs, seconds, training)
        self.own_seconds += time.perf_counter() - start


def run_trial(model_name: str, task_name: str, config: TrainConfig, metered: bool) -> tuple[float, float, list[dict]]:
    """One seeded trial: (fit seconds, seconds inside the meter, records without timing fields)."""
    task = build_task(task_name, {})
    seed_everything(config.seed)
    model = build_model(model_name, {}, task.data)
    start = time.perf_counter()
    meter = TimedMeter(model) if metered else None
    result = Trainer(model, task, config, flops_meter=meter).fit()
    own = 0.0
    if meter is not None:
        stats_start = time.perf_counter()
        meter.stats().as_user_attrs()  # what the objective does at the end of a trial
        own = meter.own_seconds + time.perf_counter() - stats_start
    seconds = time.perf_counter() - start
    return seconds, own, [_without_timing(r) for r in result.records]


def _without_timing(record: EpochRecord) -> dict:
    return {k: v for k, v in record.as_row().items() if k not in _TIMING_FIELDS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs (after one cold pair)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--model", default="tfn_classifier")
    parser.add_argument("--task", default="synthetic_tokens")
    args = parser.parse_args()
    config = TrainConfig(epochs=args.epochs)
    print(f"{args.model} on {args.task}, {args.epochs} epochs, torch threads {torch.get_num_threads()}")

    # The cold pair: the first metered trial in a process also warms up the jit tracer.
    cold_plain, _, plain_records = run_trial(args.model, args.task, config, metered=False)
    cold_metered, cold_own, metered_records = run_trial(args.model, args.task, config, metered=True)
    same = plain_records == metered_records
    print(f"cold pair:   without {cold_plain:8.2f} s   with {cold_metered:8.2f} s   inside the meter {cold_own:.3f} s")

    plain, metered, own, ratios = [], [], [], []
    for repeat in range(args.repeats):
        for with_meter in (False, True) if repeat % 2 == 0 else (True, False):
            seconds, inside, records = run_trial(args.model, args.task, config, with_meter)
            (metered if with_meter else plain).append(seconds)
            same = same and records == (metered_records if with_meter else plain_records)
            if with_meter:
                own.append(inside)
        ratios.append(metered[-1] / plain[-1] - 1)
        print(
            f"pair {repeat + 1}:      without {plain[-1]:8.2f} s   with {metered[-1]:8.2f} s   "
            f"inside the meter {own[-1]:.3f} s   overhead {100 * ratios[-1]:+.2f}%"
        )

    base, timed, inside = statistics.median(plain), statistics.median(metered), statistics.median(own)
    print()
    print(f"median fit time without the meter: {base:.2f} s")
    print(f"median fit time with the meter:    {timed:.2f} s")
    print(f"wall-clock overhead, ratio of medians:  {100 * (timed / base - 1):+.2f}%")
    print(f"wall-clock overhead, median pair ratio: {100 * statistics.median(ratios):+.2f}%")
    share = statistics.median(o / m for o, m in zip(own, metered))
    print(f"time inside the meter per trial:   {inside:.3f} s (median)")
    print(f"inside the meter / the same trial's fit time: {100 * share:.2f}% (median; target <= 1%)")
    print(f"first trial in a process: {cold_own:.3f} s inside the meter = {100 * cold_own / cold_metered:.2f}% (tracer warm-up)")
    print(f"same losses and metrics with and without the meter: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
