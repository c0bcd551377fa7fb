"""Samplers and pruners by the names the CLI accepts: one table each, so a new one is one entry.

Optuna is imported by the factories, not here: the CLI builds its parsers from these names, and
``hpsearch --help`` must not wait for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpsearch.search.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    import optuna

# The strategy for a sweep with ranges (a sweep of value lists runs as a grid), chosen on the
# lcbench benchmark (benchmarks/lcbench.py; README, "How the default strategy was chosen").
DEFAULT_SAMPLER = "gp"
DEFAULT_PRUNER = "auto"
# The smallest grid ``auto`` runs under ``halving``: below 3 x 3 points it cannot take a third
# twice, and its first rung would leave at most two to compare.
MIN_HALVING_POINTS = 9
# The pareto pruner's earliest rung. With lcbench's curves (no warmup) judged from epoch 2 instead,
# pruning at half the budget fell short of the hypervolume it reached from epoch 4 on all three
# instances (benchmarks/lcbench_mo.py, 30 seeds); a one-epoch warmup puts the first rung there anyway.
PARETO_FIRST_RUNG = 4
# Other trials that must have reached the rung before the rung pruner judges: a median of fewer says little.
MIN_TRIALS_AT_RUNG = 5
# Complete trials the pareto pruner waits for before it judges (their ends are what it compares with).
PARETO_MIN_COMPLETE = 5


def _random(seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _tpe(seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    from hpsearch.search.log_scale import LogScaled
    from hpsearch.search.pruned_learning import LearnsFromPruned

    return LogScaled(LearnsFromPruned(optuna.samplers.TPESampler(seed=seed)))


def _gp(seed: int | None) -> optuna.samplers.BaseSampler:
    from hpsearch.search.gp_sampler import SobolStartGPSampler
    from hpsearch.search.log_scale import LogScaled

    return LogScaled(SobolStartGPSampler(seed=seed))


def check_sampler_installed(name: str) -> None:
    """``UsageError`` where the sampler ``name`` needs a package this environment lacks (``cmaes``): before anything is written."""
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise UsageError("--sampler cmaes needs the cmaes package: pip install cmaes") from None


def _cmaes(seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    check_sampler_installed("cmaes")
    return optuna.samplers.CmaEsSampler(seed=seed)


# ``grid`` runs enqueued grid points (the orchestrator enqueues them, which, unlike
# ``GridSampler``, handles parameters that only some models have); its sampler only fills in
# trials started beyond the grid, which the orchestrator avoids. TPE and GP learn
# ``--max-flops``/``--max-params`` from the constraints each trial sets (``Trial.set_constraint``).
SAMPLER_FACTORIES: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    "grid": _random,
    "tpe": _tpe,
    "random": _random,
    "gp": _gp,
    "cmaes": _cmaes,
}
SAMPLERS = tuple(SAMPLER_FACTORIES)


def _every_epoch(first: int, epochs: int) -> tuple[int, ...]:
    return tuple(range(first, epochs))


def _geometric(first: int, epochs: int, factor: int) -> tuple[int, ...]:
    """``first``, then ``factor`` times the one before, below ``epochs``."""
    return tuple(first * factor**k for k in range(epochs) if first * factor**k < epochs)


def _tripling(first: int, epochs: int) -> tuple[int, ...]:
    return _geometric(first, epochs, 3)


def _percentile(first: int, epochs: int, points: int | None = None) -> optuna.pruners.BasePruner:
    from hpsearch.search.percentile_pruner import ExplainedPercentilePruner

    return ExplainedPercentilePruner(25.0, n_startup_trials=2, n_warmup_steps=first)


def _median(first: int, epochs: int, points: int | None = None) -> optuna.pruners.BasePruner:
    from hpsearch.search.percentile_pruner import ExplainedMedianPruner

    return ExplainedMedianPruner(n_startup_trials=2, n_warmup_steps=first)


def _sha(first: int, epochs: int, points: int | None = None) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3)


def _hyperband(first: int, epochs: int, points: int | None = None) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=max(first, epochs), reduction_factor=3)


def _wilcoxon(first: int, epochs: int, points: int | None = None) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.WilcoxonPruner()


def _rung(first: int, epochs: int, points: int | None = None) -> optuna.pruners.BasePruner:
    from hpsearch.search.rung_pruner import RungPruner, third_rung

    return RungPruner(third_rung(first, epochs))


def _rung_epochs(first: int, epochs: int) -> tuple[int, ...]:
    from hpsearch.search.rung_pruner import third_rung

    return tuple(e for e in (third_rung(first, epochs),) if e < epochs)


def _nop(first: int, epochs: int, points: int | None = None) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.NopPruner()


def _halving(first: int, epochs: int, points: int | None = None) -> optuna.pruners.BasePruner:
    from hpsearch.search.halving import HalvingPruner

    if points is None:
        raise UsageError("--pruner halving runs a grid's points in rounds; it needs a grid (value lists, --sampler grid)")
    return HalvingPruner(_tripling(first, epochs), points)


@dataclass(frozen=True)
class PrunerKind:
    """A pruner by name: how to make it (from the first judged epoch, the epochs and a grid's points), and the epochs it may stop a trial at."""

    make: Callable[[int, int, int | None], optuna.pruners.BasePruner]  # (first judged epoch, epochs, grid points)
    rungs: Callable[[int, int], tuple[int, ...]]
    # The number of trials it takes before one can be stopped: the others it compares with, plus the one.
    trials_to_judge: int = 1


# ``pareto`` is for multi-objective studies, which Optuna's pruners refuse: the Optuna side is
# no pruner, and ``search/pareto.py`` judges each trial on the epoch table at twice the first
# judged epoch but not before epoch ``PARETO_FIRST_RUNG``, then each time the epochs double
# (judging at the first epoch pruned 90% of lcbench's trials, and at the second lost
# hypervolume against the fourth).
# ``percentile`` prunes a trial whose value at an epoch is worse than the 25th percentile of the
# completed trials' values at that epoch, once 2 trials have completed; ``median`` does the same
# with the median. ``sha`` is asynchronous successive halving: at the first judged epoch, then
# each time the epochs triple, a trial goes on only if it ranks in the best third of the trials
# that got there. ``hyperband`` runs several successive-halving brackets (its rungs: the first's).
# ``rung`` judges once, at a third of the epochs: a trial below the median of every trial that got
# there stops (``search/rung_pruner.py``). ``halving`` is synchronous successive halving for a
# grid: every point waits at each rung (sha's) until all have reached it, and the best third go on
# (``search/halving.py``).
PRUNER_KINDS: dict[str, PrunerKind] = {
    "percentile": PrunerKind(_percentile, _every_epoch, trials_to_judge=3),
    "median": PrunerKind(_median, _every_epoch, trials_to_judge=3),
    "sha": PrunerKind(_sha, _tripling),
    "hyperband": PrunerKind(_hyperband, _tripling),
    "wilcoxon": PrunerKind(_wilcoxon, _every_epoch),
    "rung": PrunerKind(_rung, _rung_epochs, trials_to_judge=MIN_TRIALS_AT_RUNG + 1),
    "halving": PrunerKind(_halving, _tripling),
    "pareto": PrunerKind(_nop, lambda first, epochs: _geometric(max(2 * first, PARETO_FIRST_RUNG), epochs, 2),
                         trials_to_judge=PARETO_MIN_COMPLETE + 1),
    "none": PrunerKind(_nop, lambda first, epochs: ()),
}
PRUNERS = ("auto", *PRUNER_KINDS)
# The pruners a simulation cannot run, and why: it samples its trials, on one objective.
NOT_SIMULATED = {
    "halving": "runs a grid's points in rounds, and a simulation samples lcbench's continuous space",
    "pareto": "judges several objectives, and a simulation maximizes val_accuracy alone",
}
SIMULATED_PRUNERS = tuple(p for p in PRUNERS if p not in NOT_SIMULATED)
# YAHPO Gym's data folder for a simulated search, where --data (data=) is not given. Here, not in
# simulate.py, so that ``hpsearch simulate --help`` loads no Optuna, as every command's help does.
DATA_ENV = "HPSEARCH_YAHPO_DATA"


def auto_pruner(sampler: str, multi_objective: bool = False, grid_points: int | None = None) -> str:
    """What ``--pruner auto`` means for ``sampler``, in a study of one objective or of several.

    A multi-objective study gets no performance pruner: ``pareto`` is there to choose, but on
    lcbench's accuracy against training time it reached at half the budget the hypervolume that
    no pruning reached with all of it on none of three instances (benchmarks/lcbench_mo.py).

    The GP sampler gets ``rung``: one judgement at a third of the epochs, where lcbench's early
    epochs would misrank configurations that learn slowly but end best, and the GP learns from
    the pruned trials (``gp_sampler``), so the budget buys more trials. TPE gets it too: on
    lcbench (5 seeds) the percentile pruner, judging from the first epoch, left TPE at a final
    regret of 0.140 on 167168 where ``rung`` reached 0.005 (0.006 against -0.035 on 189873,
    0.004 against -0.023 on 189906), and over 30 seeds ``rung`` was level with no pruning.

    A grid of ``grid_points`` (all of it run, its waiting points resumable) gets ``halving`` from
    9 points on: on the 16-point grid of benchmarks/pruning_efficiency.py it spent a quarter of the
    epochs or less and kept the best in any order, where the percentile pruner spent a third and
    lost the best in some orders. A smaller grid, and the random and CMA-ES samplers, get the
    percentile pruner: below 9 points halving's first rung would leave at most two.
    """
    if multi_objective:
        return "none"
    if sampler in ("gp", "tpe"):
        return "rung"
    return "halving" if sampler == "grid" and grid_points is not None and grid_points >= MIN_HALVING_POINTS else "percentile"


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name`` (``SAMPLER_FACTORIES``)."""
    if name not in SAMPLER_FACTORIES:
        raise UsageError(f"unknown sampler {name!r}")
    return SAMPLER_FACTORIES[name](seed)


def first_judged_epoch(epochs: int, warmup_epochs: float) -> int:
    """The first epoch a pruner may judge: the first one after the LR warmup.

    During the warmup a trial's value mostly says how fast its LR ramps up: on the default
    grid the eventual best trial ranks fifth of sixteen after epoch 1 and second after epoch 2.
    """
    return max(1, min(epochs, math.ceil(warmup_epochs) + 1))


def pruner_that_runs(name: str, sampler: str, multi_objective: bool = False, grid_points: int | None = None) -> str:
    """``name``, or the pruner ``auto`` means for ``sampler`` (``auto_pruner``)."""
    return auto_pruner(sampler, multi_objective, grid_points) if name == "auto" else name


def _kind(name: str, sampler: str, grid_points: int | None = None) -> PrunerKind:
    name = pruner_that_runs(name, sampler, grid_points=grid_points)
    if name not in PRUNER_KINDS:
        raise UsageError(f"unknown pruner {name!r}")
    return PRUNER_KINDS[name]


def make_pruner(
    name: str, epochs: int, warmup_epochs: float, sampler: str = "grid", grid_points: int | None = None
) -> optuna.pruners.BasePruner:
    """The Optuna pruner called ``name`` (``PRUNER_KINDS``), sized for ``epochs`` reports per trial.

    ``auto`` is the default's choice for ``sampler`` (``auto_pruner``). Every pruner waits for the
    first epoch after the LR warmup (``first_judged_epoch``), and the objective never prunes after
    a trial's last epoch. ``grid_points``: the points of a grid run whole (``halving`` needs it).
    """
    return _kind(name, sampler, grid_points).make(first_judged_epoch(epochs, warmup_epochs), epochs, grid_points)


def idle_pruner_note(name: str, epochs: int, warmup_epochs: float, trials: int) -> str | None:
    """Why the pruner called ``name`` could stop no trial of a study of ``trials`` trials of ``epochs`` epochs; else None."""
    if name == "none":
        return None
    kind = _kind(name, "grid")
    if not kind.rungs(first_judged_epoch(epochs, warmup_epochs), epochs):
        return f"--pruner {name} judges no epoch before the last of {epochs} (none of the LR warmup): it could stop no trial"
    if trials < kind.trials_to_judge:
        return (f"--pruner {name} stops a trial only by comparing it with {kind.trials_to_judge - 1} trials before it, "
                f"so a study needs {kind.trials_to_judge}, and this one has {trials} (a trial and its retries counted once): "
                "it could stop none")
    return None


def pruner_rungs(name: str, epochs: int, warmup_epochs: float, sampler: str = "grid") -> tuple[int, ...]:
    """The epochs before the last at which the pruner called ``name`` may stop a trial."""
    return _kind(name, sampler).rungs(first_judged_epoch(epochs, warmup_epochs), epochs)


# A replay judges one objective's curves; the Pareto pruner is for multi-objective studies. auto
# is not a pruner of its own: it means one of these, by sampler.
REPLAYABLE = tuple(p for p in PRUNER_KINDS if p != "pareto")
NOT_REPLAYABLE = {
    "pareto": "pareto judges several objectives; a replay judges one objective's curves",
    "auto": f"auto means {auto_pruner('gp')} under the {' and '.join(s for s in SAMPLERS if s != 'grid' and auto_pruner(s) == auto_pruner('gp'))} "
    f"samplers, {auto_pruner('grid', grid_points=MIN_HALVING_POINTS)} for a "
    f"grid of {MIN_HALVING_POINTS} points or more and {auto_pruner('grid')} otherwise: name the one to replay",
}
# wilcoxon is replayed only when named: it is meant for an objective averaged over instances, one a step.
REPLAYED_BY_DEFAULT = tuple(p for p in REPLAYABLE if p != "wilcoxon")


def replayable_pruners(pruners: str | Sequence[str] | None) -> list[str]:
    """The pruners ``hpsearch replay`` is to replay (``None``: ``REPLAYED_BY_DEFAULT``; a string: that one pruner);
    ``UsageError`` names one it cannot."""
    if pruners is None:
        return list(REPLAYED_BY_DEFAULT)
    if isinstance(pruners, str):
        pruners = [pruners]
    named = [p.strip() for p in pruners if p.strip()]
    if not named:
        raise UsageError("--pruners names no pruner")
    for pruner in named:
        if pruner in NOT_REPLAYABLE:
            raise UsageError(f"--pruners {pruner}: {NOT_REPLAYABLE[pruner]}")
        if pruner not in REPLAYABLE:
            raise UsageError(f"unknown pruner {pruner!r}{did_you_mean(pruner, REPLAYABLE)}; choose from {', '.join(REPLAYABLE)}")
    return named
