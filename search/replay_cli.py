"""``hpsearch replay``: which pruner would have served a finished study best, told from its own curves."""

from __future__ import annotations

from collections.abc import Sequence

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.errors import EXIT_OK, UsageError
from hpsearch.search.samplers import MIN_HALVING_POINTS, PRUNER_KINDS, auto_pruner
from hpsearch.search.tables_cli import STORAGE_HELP

# A replay judges one objective's curves; the Pareto pruner is for multi-objective studies. auto
# is not a pruner of its own: it means one of these, by sampler.
REPLAYABLE = tuple(p for p in PRUNER_KINDS if p != "pareto")
NOT_REPLAYABLE = {
    "pareto": "pareto judges several objectives; a replay judges one objective's curves",
    "auto": f"auto means {auto_pruner('gp')} under the gp sampler, {auto_pruner('grid', grid_points=MIN_HALVING_POINTS)} for a "
    f"grid of {MIN_HALVING_POINTS} points or more and {auto_pruner('grid')} otherwise: name the one to replay",
}


def build_replay_parser() -> ArgumentParser:
    return ArgumentParser(
        prog="hpsearch replay",
        description="Replay a study whose trials all ran to the end (a grid, or --pruner none) under other pruners, "
        "from its stored learning curves, without training: for each pruner, the share of the epochs it would have "
        "spent and how often it would have kept the study's best trial, over many random trial orders.",
        epilog="example:\n  hpsearch --models tfn_classifier --param_sweep embed_dim:32,64 lr:1e-3,3e-3,1e-2 --pruner none\n"
        "  hpsearch replay --study tfn_classifier-synthetic_tokens --pruners halving,percentile,median,sha,hyperband\n"
        "halving (points wait at each rung for the others) spends and keeps the same in every order.",
    )


def replay_main(argv: Sequence[str]) -> int:
    parser = build_replay_parser()
    parser.add_argument("--study", required=True, help="study name (hpsearch studies lists them)")
    parser.add_argument("--storage", help=STORAGE_HELP)
    parser.add_argument(
        "--pruners",
        # wilcoxon judges per-step values that an epoch curve lacks.
        default=",".join(p for p in REPLAYABLE if p != "wilcoxon"),
        help="comma-separated pruners to replay (default: %(default)s)",
    )
    parser.add_argument(
        "--orders", type=int, default=100, help="random trial orders, the stored one first (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the orders (default: %(default)s)")
    args = parser.parse_args(argv)
    pruners = [p for p in args.pruners.split(",") if p]
    unknown = [p for p in pruners if p not in REPLAYABLE]
    if unknown and unknown[0] in NOT_REPLAYABLE:
        raise UsageError(f"--pruners {unknown[0]}: {NOT_REPLAYABLE[unknown[0]]}")
    if unknown or not pruners:
        raise UsageError(
            f"unknown pruner {unknown[0]!r}; choose from {', '.join(REPLAYABLE)}"
            if unknown
            else "--pruners names no pruner"
        )
    if args.orders < 1:
        raise UsageError(f"--orders must be at least 1 (got {args.orders})")
    from hpsearch.search.replay import compare, stored_curves
    from hpsearch.storage.database import StudyDatabase
    from hpsearch.storage.urls import resolve_storage_url

    with StudyDatabase.open_for_reading(resolve_storage_url(args.storage)) as database:
        stored = stored_curves(database.load_study(args.study))
    n = len(stored.curves)
    print(
        f"Study {args.study!r}: {n} trials x {stored.epochs} epochs = {n * stored.epochs} epochs; best {stored.metric} "
        f"{stored.best:.6g}. Replayed over {args.orders} trial order{'s' if args.orders != 1 else ''}:"
    )
    print(f"{'pruner':<12} {'epochs spent':>12} {'kept the best':>13} {'trials pruned':>13}")
    for row in compare(stored, pruners, args.orders, args.seed):
        print(f"{row.pruner:<12} {row.epoch_share:>11.1%} {row.kept_best:>12.0%} {row.pruned:>13.1f}")
    print(
        "(epochs spent: the median share of the full study's epochs; kept the best: the share of orders in which a "
        "trial with the study's best value ran to the end; trials pruned: the mean)"
    )
    return EXIT_OK
