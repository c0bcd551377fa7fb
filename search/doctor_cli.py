"""``hpsearch doctor``: what this machine measures and what ``--precision auto`` picks on it."""

from __future__ import annotations

from collections.abc import Sequence

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.errors import EXIT_OK, UsageError
from hpsearch.trainers.config import DEVICES
from hpsearch.trainers.hardware import resolve_device


def doctor_main(argv: Sequence[str]) -> int:
    parser = ArgumentParser(
        prog="hpsearch doctor",
        description="Measure (once per machine, device and torch version; then from the cache) a matmul's speed "
        "in each precision on a device, and print what --precision auto picks there (where it says bf16, a search "
        "then decides per model from the model's own steps) and the peak FLOP/s that flops.mfu divides by.",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help="default: %(default)s")
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="measure again instead of reading the cache (each precision keeps the higher of the two rates: "
        "load only lowers one), and forget the models' step timings",
    )
    args = parser.parse_args(argv)
    # Imported here: torch (trainers.precision imports it) would make --help wait.
    from hpsearch.trainers.precision import (
        PRECISION_CACHE,
        SPEEDUP,
        cache_dir,
        cached_choice,
        peak_flops,
        precision_choice,
    )

    try:
        device = resolve_device(args.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    from hpsearch.trainers.step_speed import STEP_TIMINGS_CACHE, forget_step_timings, kept_step_timings

    cached = None if args.remeasure else cached_choice(device)
    forgotten = forget_step_timings(device) if args.remeasure else 0
    choice = cached or precision_choice(device, remeasure=True)
    import torch

    print(f"device:    {device} ({choice.device})")
    print(f"torch:     {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"measured:  {choice.matmul_size} x {choice.matmul_size} matmul, fp32 operands, best of 10 alternating rounds")
    for precision, rate in choice.flops_per_second.items():
        print(f"  {precision:<5} {rate / 1e9:10.1f} GFLOP/s  ({choice.speedup(precision):.2f}x fp32)")
    where = ", for the models whose own steps are that much faster too" if choice.chosen != "fp32" else ""
    print(f"auto:      {choice.chosen} (a lower precision needs {SPEEDUP}x fp32's speed{where})")
    if choice.chosen == "fp32":
        print("per model: nothing to time; auto runs every model in fp32 here")
    else:
        print(f"per model: a search decides auto per model from its own steps: it times a few training steps in fp32 and "
              f"{choice.chosen} (once per model and hyperparameters on this machine, then from the cache) and runs {choice.chosen} only where they are "
              f"{SPEEDUP}x faster; each trial's precision.speedup says what was measured")
    peaks = ", ".join(f"{p} {peak_flops(device, p) / 1e9:.1f} GFLOP/s" for p in choice.flops_per_second)
    print(f"MFU peak:  {peaks}")
    if cached is None:
        taken = f"now ({choice.measured_at} UTC); later runs read it from the cache"
    else:
        when = f"{choice.measured_at} UTC" if choice.measured_at else "earlier"
        taken = f"{when}, read from the cache (--remeasure measures again)"
    print(f"taken:     {taken}")
    kept = f"{forgotten} forgotten" if args.remeasure else f"{kept_step_timings(device)} kept for this device"
    print(f"cache:     {cache_dir() / PRECISION_CACHE}; models' step timings in {cache_dir() / STEP_TIMINGS_CACHE} ({kept})")
    return EXIT_OK
