"""``hpsearch lr-find``: the LR range test for one model configuration, with a plot.

The trainer (torch) and plotly are imported once the arguments are parsed: ``--help`` must not
wait for them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hpsearch.search.arguments import (
    ArgumentParser,
    add_plugin_argument,
    add_task_arguments,
    add_training_arguments,
    flags,
    task_options,
    training_settings,
)
from hpsearch.search.errors import EXIT_OK, EXIT_RUN_FAILED, UsageError
from hpsearch.search.plugins import load_plugins, plugin_key, preload_plugins
from hpsearch.search.resolved import check_task_options, resolve
from hpsearch.search.spec import StudySpec

if TYPE_CHECKING:
    from hpsearch.trainers.lr_finder import LRFinderResult


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="hpsearch lr-find",
        description="Run the LR range test (fastai's LR finder) on one model: raise the LR exponentially "
        "from --start-lr to --end-lr over --num-iter steps, stop early when the loss diverges, print "
        "the LR where the smoothed loss falls fastest and write the curve as an HTML plot. Exits 1 "
        "where the loss does not fall before it rises (no suggestion; the plot is written).",
        epilog="example: hpsearch lr-find --models tfn_classifier embed_dim:64 kernel_type:compact --num-iter 100",
    )
    parser.add_argument("--models", nargs=1, required=True, metavar="MODEL", help="the model to test")
    parser.add_argument("hyperparameters", nargs="*", metavar="NAME:VALUE", help="the model's hyperparameters (others keep their defaults)")
    parser.add_argument("--start-lr", type=float, default=1e-7, help="default: %(default)g")
    parser.add_argument("--end-lr", type=float, default=10.0, help="default: %(default)g")
    parser.add_argument("--num-iter", type=int, default=100, help="default: %(default)s")
    parser.add_argument("--out", default="lr_find.html", help="the plot's HTML file (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per CPU core)")
    add_plugin_argument(parser)
    add_training_arguments(parser, leave_out=NOT_THE_TESTS, title="training (as a trial's steps run)")
    add_task_arguments(parser)  # last: a task option named like one of the flags above stays the flag
    parser.owned_elsewhere = _not_the_tests
    return parser


# Trainer settings the range test does not read: it runs --num-iter single steps at the LRs it
# sets, with no schedule, epochs, stopping or checkpoints. Refused rather than ignored.
NOT_THE_TESTS = frozenset({
    "epochs", "lr", "scheduler", "warmup_epochs", "min_lr", "step_every_epochs", "step_gamma", "grad_accum_steps",
    "early_stopping_patience", "on_divergence", "divergence_factor", "max_lr_reductions", "checkpoints",
})


def _not_the_tests() -> dict[str, str]:
    return {
        flag: f"{flag} does not change the LR range test, which runs --num-iter steps from --start-lr to --end-lr; "
        "give it to the search"
        for name in NOT_THE_TESTS
        for flag in flags(name)
    }


def lr_find_main(argv: Sequence[str]) -> int:
    preload_plugins(argv)
    args = build_parser().parse_args(argv)
    if any("," in item or ".." in item for item in args.hyperparameters):
        raise UsageError("lr-find takes one value per hyperparameter (NAME:VALUE), not a list or a range")
    if not 0 < args.start_lr < args.end_lr:
        raise UsageError(f"--start-lr must be positive and below --end-lr (got {args.start_lr:g} and {args.end_lr:g})")
    if args.num_iter < 5:
        raise UsageError(f"--num-iter must be at least 5 (got {args.num_iter})")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {args.threads})")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the directory {out.parent} does not exist")
    spec = StudySpec(
        models=tuple(args.models),
        sweep=tuple(args.hyperparameters),
        task_options=task_options(args),
        train=training_settings(args),
        plugins=tuple(plugin_key(p, Path.cwd()) for p in args.plugins or ()),
        **({"task": args.task} if args.task else {}),  # else StudySpec's default task
    )
    from hpsearch.search.trial import TrialPlan
    from hpsearch.trainers.lr_finder import DIVERGE_FACTOR, find_lr

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    load_plugins(spec.plugins)
    check_task_options(spec, {})
    resolved = resolve(spec)
    plan = TrialPlan.from_point(resolved.sweep.grid_point(0), resolved.train_config, (p.name for p in resolved.task.step_params))
    trainer = plan.lr_test_trainer(resolved.task, plan.initial_model(resolved.task))
    result = find_lr(trainer, args.start_lr, args.end_lr, args.num_iter)
    write_plot(result, out, title=f"LR range test: {plan.model_name} {' '.join(args.hyperparameters)}".strip())
    stop = "ran every step" if result.diverged_at is None else (
        f"stopped at lr={result.diverged_at:.3g}, where the loss rose past {DIVERGE_FACTOR:g}x its lowest; the plot ends before it")
    if result.suggested is None:
        print(f"Plot: {out.resolve()}")
        print(f"hpsearch lr-find: no suggested LR: {result.no_suggestion()}; start the range lower (--start-lr) "
              "or run more steps (--num-iter)", file=sys.stderr)
        return EXIT_RUN_FAILED
    print(f"Suggested LR: {result.suggested:.3g} (steepest descent of the smoothed loss; {len(result.lrs)} steps, {stop})")
    print(f"Plot: {out.resolve()}")
    return EXIT_OK


def write_plot(result: LRFinderResult, path: Path, title: str) -> None:
    """The smoothed loss against the LR on a log axis, the suggestion marked; one HTML file."""
    import plotly.graph_objects as go

    figure = go.Figure(go.Scatter(x=result.lrs, y=result.losses, mode="lines", name="smoothed loss"))
    if result.suggested is not None:
        figure.add_vline(x=result.suggested, line_dash="dash", annotation_text=f"suggested {result.suggested:.3g}")
    figure.update_layout(title=title, xaxis_title="learning rate", yaxis_title="smoothed training loss", xaxis_type="log")
    figure.write_html(path, include_plotlyjs=True, full_html=True)
