"""Sampler and pruner choice, by the names the CLI accepts."""

from __future__ import annotations

import math

import optuna

from hpsearch.search.errors import UsageError
from hpsearch.search.spec import auto_pruner


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name``.

    ``grid`` runs enqueued grid points (the orchestrator enqueues them, which, unlike
    ``GridSampler``, handles parameters that only some models have); its sampler only fills
    in trials started beyond the grid, which the orchestrator avoids. TPE and GP learn
    ``--max-flops``/``--max-params`` from the constraints each trial sets (``Trial.set_constraint``).
    """
    if name in ("grid", "random"):
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise UsageError("--sampler cmaes needs the cmaes package: pip install cmaes") from None
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise UsageError(f"unknown sampler {name!r}")


def first_judged_epoch(epochs: int, warmup_epochs: float) -> int:
    """The first epoch a pruner may judge: the first one after the LR warmup.

    During the warmup a trial's value mostly says how fast its LR ramps up: on the default
    grid the eventual best trial ranks fifth of sixteen after epoch 1 and second after epoch 2.
    """
    return max(1, min(epochs, math.ceil(warmup_epochs) + 1))


def make_pruner(name: str, epochs: int, warmup_epochs: float, sampler: str = "grid") -> optuna.pruners.BasePruner:
    """The Optuna pruner called ``name``, sized for ``epochs`` reports per trial.

    ``auto`` is the default's choice for ``sampler`` (``spec.auto_pruner``).

    Every pruner waits for the first epoch after the LR warmup (``first_judged_epoch``), and
    the objective never prunes after a trial's last epoch. ``percentile`` (the default) prunes
    a trial whose value at an epoch is worse than the 25th percentile of the completed
    trials' values at that epoch, once 2 trials have completed; ``median`` does the same with
    the median. ``sha`` is asynchronous successive halving: at that first epoch, then each time
    the epochs triple, a trial goes on only if it ranks in the best third of the trials that
    got there. ``hyperband`` runs several successive-halving brackets.
    """
    first = first_judged_epoch(epochs, warmup_epochs)
    if name == "auto":
        name = auto_pruner(sampler)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=2, n_warmup_steps=first)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=first)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=max(first, epochs), reduction_factor=3)
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UsageError(f"unknown pruner {name!r}")


def pruner_rungs(name: str, epochs: int, warmup_epochs: float, sampler: str = "grid") -> tuple[int, ...]:
    """The epochs before the last at which the pruner called ``name`` may stop a trial.

    Successive halving judges at its first epoch and then each time the epochs triple (for
    Hyperband, its first bracket's); the percentile and median pruners judge every epoch.
    """
    first = first_judged_epoch(epochs, warmup_epochs)
    if name == "auto":
        name = auto_pruner(sampler)
    if name in ("sha", "hyperband"):
        return tuple(first * 3**k for k in range(epochs) if first * 3**k < epochs)
    if name in ("percentile", "median", "wilcoxon"):
        return tuple(range(first, epochs))
    return ()
