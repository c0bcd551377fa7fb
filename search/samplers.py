"""Sampler and pruner choice, by the names the CLI accepts."""

from __future__ import annotations

from typing import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial

from hpsearch.search.errors import UsageError


def make_sampler(
    name: str, seed: int | None, constraints: Callable[[FrozenTrial], Sequence[float]] | None = None
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name``.

    ``grid`` runs enqueued grid points (the orchestrator enqueues them, which, unlike
    ``GridSampler``, handles parameters that only some models have); its sampler only fills
    in trials started beyond the grid, which the orchestrator avoids. ``constraints`` (for
    ``--max-flops``/``--max-params``) go to the samplers that learn from them.
    """
    if name in ("grid", "random"):
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, constraints_func=constraints)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise UsageError("--sampler cmaes needs the cmaes package: pip install cmaes") from None
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise UsageError(f"unknown sampler {name!r}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """The Optuna pruner called ``name``, sized for ``epochs`` reports per trial.

    ``median`` (the default) prunes a trial whose epoch value is worse than the median of
    earlier trials at the same epoch, from the first epoch on, once 4 trials have finished:
    a small grid is never judged on one or two runs.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=4, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UsageError(f"unknown pruner {name!r}")
