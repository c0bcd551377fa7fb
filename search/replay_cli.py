"""``hpsearch replay``: which pruner would have served a finished study best, told from its own curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.errors import EXIT_OK
from hpsearch.search.samplers import REPLAYED_BY_DEFAULT, replayable_pruners
from hpsearch.search.tables_cli import STORAGE_HELP

if TYPE_CHECKING:
    from hpsearch.search.replay import PrunerSummary


def build_replay_parser() -> ArgumentParser:
    return ArgumentParser(
        prog="hpsearch replay",
        description="Replay a study whose trials all ran to the end (run with --pruner none: a grid prunes too, by "
        "default) under other pruners, "
        "from its stored learning curves, without training: for each pruner, the share of the epochs it would have "
        "spent, how often it would have kept the study's best trial and the best value it would have found, over many "
        "random trial orders. In Python: hpsearch.search.replay_study.",
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
        default=",".join(REPLAYED_BY_DEFAULT),
        help="comma-separated pruners to replay (default: %(default)s; wilcoxon, meant for an objective averaged "
        "over instances, only when named)",
    )
    parser.add_argument(
        "--orders", type=int, default=100, help="random trial orders, the stored one first (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the orders (default: %(default)s)")
    args = parser.parse_args(argv)
    pruners = replayable_pruners(args.pruners.split(","))
    from hpsearch.search.replay import compare, stored_curves_in

    stored = stored_curves_in(args.storage, args.study)
    rows = compare(stored, pruners, args.orders, args.seed)  # before any output: a refusal leaves none
    n = len(stored.curves)
    print(
        f"Study {args.study!r}: {n} trials x {stored.epochs} epochs = {n * stored.epochs} epochs; best {stored.metric} "
        f"{stored.best:.6g}. Replayed over {args.orders} trial order{'s' if args.orders != 1 else ''}:"
    )
    print(f"{'pruner':<12} {'epochs spent':>12} {'kept the best':>13} {'best found: median':>18} {'worst':>10} {'trials pruned':>13}")
    for row in rows:
        print(f"{row.pruner:<12} {row.epoch_share:>11.1%} {row.kept_best:>12.0%} {row.best_median:>18.6g} "
              f"{row.best_worst:>10.6g} {row.pruned:>13.1f}")
    print(
        "(epochs spent: the median share of the full study's epochs; kept the best: the share of orders in which a "
        f"trial with the study's best value ran to the end; best found: the best {stored.metric} a search ended with, "
        "the median and the worst over the orders; trials pruned: the mean; --orders 1 replays the stored order alone)"
    )
    print(choice(rows, stored.grid))
    return EXIT_OK


def choice(rows: Sequence[PrunerSummary], grid: bool = True) -> str:
    """The line that reads the table: the pruner of the fewest epochs among those that kept the best in every order.

    ``halving`` runs a grid's value lists: for a study that sampled ranges (``grid`` False) it is no choice.
    """
    keeping = [row for row in rows if row.kept_best == 1.0 and row.pruner != "none"]
    usable = [row for row in keeping if grid or row.pruner != "halving"]
    halving = "" if len(usable) == len(keeping) else (
        "halving kept it too, but runs a grid (value lists), and this study sampled ranges")
    if not usable:
        return (f"No pruner replayed kept the best in every order{' that fits this study (' + halving + ')' if halving else ''}: "
                "weigh how often each kept it against the epochs it spent, or keep --pruner none.")
    best = min(usable, key=lambda row: row.epoch_share)
    note = " (it runs a grid: value lists)" if best.pruner == "halving" else f" ({halving})" if halving else ""
    return (f"Fewest epochs while keeping the best in every order: {best.pruner} ({best.epoch_share:.1%} of the epochs); "
            f"pass --pruner {best.pruner}{note}.")
