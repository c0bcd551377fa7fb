"""``HalvingPruner``: synchronous successive halving for a grid, whose points wait at each rung for the others.

A pruner that judges each trial as it runs (percentile, asynchronous successive halving) has
nothing to judge a grid's first points against and must let them run, and it lets the eventual
best run every epoch: on the 16-point grid of ``benchmarks/pruning_efficiency.py`` those two
alone cost an eighth of the epochs, and no such rule found spends at most a quarter and keeps the
best in 95% of the orders the points can run in. Synchronous successive halving (Jamieson and
Talwalkar, 2016; the brackets of Hyperband) runs every point to the first rung, keeps the best
third, runs those to the next rung (three times the epochs), and so on until one is left, which
runs to the end. What it spends and keeps does not depend on the order the points run in.

A point that reaches a rung before the others of the rung waits: its trial ends PRUNED there,
its checkpoint kept, its ``prune_reason`` saying so. Once every point of the rung has reached it,
the best are queued again (``promote``), each a retry (``retry_of``) that resumes from the waiting
trial's checkpoint, as a preempted trial's does; the last point to reach the rung goes on at once
if it is among them. Everything is decided from the values the trials reported, so every worker
decides alike, and the orchestrator promotes under the study's queue lock.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.search.queue import point_key, trial_point
from hpsearch.storage.attributes import HALVING_ATTR, RETRY_OF_ATTR

REDUCTION = 3  # a third goes on at each rung, as in Hyperband; the rungs triple too (``samplers``' sha rungs)
ACTIVE = (TrialState.WAITING, TrialState.RUNNING)


def survivors(points: int, rungs: Sequence[int]) -> tuple[int, ...]:
    """How many points go on past each rung: a third (rounded down, at least one) of those that reached it, until one is left.

    Shorter than ``rungs`` where one is left before the last rung: past there nobody waits.
    """
    keeps, left = [], points
    for _ in rungs:
        if left <= 1:
            break
        left = max(1, left // REDUCTION)
        keeps.append(left)
    return tuple(keeps)


@dataclass
class _Point:
    """What the study's trials say of one grid point."""

    values: dict[int, float] = field(default_factory=dict)  # epoch -> the value reported there
    first_at: dict[int, int] = field(default_factory=dict)  # epoch -> the first trial that reported it (a retry repeats them)
    newest: FrozenTrial | None = None
    active: bool = False  # a trial of it waits or runs

    @property
    def reached(self) -> int:
        return max(self.values, default=0)


class HalvingPruner(optuna.pruners.BasePruner):
    """Pauses each point of a grid of ``points`` at each rung until all have reached it; the best third go on."""

    def __init__(self, rungs: Sequence[int], points: int) -> None:
        self.points = points
        self.keeps = survivors(points, rungs)
        self.rungs = tuple(rungs[: len(self.keeps)])  # where points wait
        self._reasons: dict[int, str] = {}

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step not in self.rungs:
            return False
        index = self.rungs.index(step)
        going_on = self._going_on(study, self._standing(study))
        key = point_key(trial_point(trial))
        reaching = self.points if index == 0 else self.keeps[index - 1]
        best = "the best one goes on" if self.keeps[index] == 1 else f"the best {self.keeps[index]} go on"
        if index < len(going_on):
            if key in going_on[index]:
                return False
            self._reasons[trial.number] = f"all {reaching} points of the rung reached epoch {step}, and {best}: not this one"
            return True
        self._reasons[trial.number] = (
            f"waits at epoch {step} until all {reaching} points of the rung have reached it; then {best}, each resumed "
            "from its checkpoint by a retry (retry_of); the study's user attribute hpsearch.halving then says which"
        )
        return True

    def explain(self, trial_number: int) -> str | None:
        """Why the trial stopped at its rung, as its ``prune_reason`` ends."""
        return self._reasons.get(trial_number)

    def promote(self, study: optuna.Study) -> int:
        """Queue a retry of each waiting point that a complete rung lets go on; return how many were queued.

        Call it under the study's queue lock: a point with a trial waiting or running is not queued again.
        """
        standing = self._standing(study)
        queued = 0
        going_on = self._going_on(study, standing)
        self._record_rungs(study, standing, going_on)
        for index, keys in enumerate(going_on):
            for key in keys:
                point = standing[key]
                newest = point.newest
                if point.active or newest is None or point.reached != self.rungs[index] or newest.state != TrialState.PRUNED:
                    continue
                study.enqueue_trial(dict(key), user_attrs={RETRY_OF_ATTR: [newest.number]})
                point.active = True
                queued += 1
        return queued

    def _record_rungs(self, study: optuna.Study, standing: dict[Hashable, _Point], going_on: list[list[Hashable]]) -> None:
        """Store each complete rung's verdict as the study's ``hpsearch.halving`` attribute: a trial cannot be told it after it ended.

        For each rung epoch, the trials that reached it and went on, and those that stopped there,
        each point named by its trial that reached the rung.
        """
        verdicts = {}
        population: Sequence[Hashable] = list(standing)
        for rung, keys in zip(self.rungs, going_on):
            reached = [key for key in population if rung in standing[key].values]
            verdicts[str(rung)] = {
                "went_on": sorted(standing[key].first_at[rung] for key in keys),
                "stopped": sorted(standing[key].first_at[rung] for key in reached if key not in keys),
            }
            population = keys
        if verdicts and study.user_attrs.get(HALVING_ATTR) != verdicts:
            study.set_user_attr(HALVING_ATTR, verdicts)

    def _standing(self, study: optuna.Study) -> dict[Hashable, _Point]:
        standing: dict[Hashable, _Point] = {}
        for trial in study.get_trials(deepcopy=False):
            point = standing.setdefault(point_key(trial_point(trial)), _Point())
            point.values.update(trial.intermediate_values)
            for epoch in trial.intermediate_values:
                point.first_at[epoch] = min(point.first_at.get(epoch, trial.number), trial.number)
            if point.newest is None or trial.number > point.newest.number:
                point.newest = trial
            point.active |= trial.state in ACTIVE
        return standing

    def _going_on(self, study: optuna.Study, standing: dict[Hashable, _Point]) -> list[list[Hashable]]:
        """For each rung from the first, while every point of it has reached it or ended: the points that go on past it, best first.

        Best first, so that promotions are queued in one order whichever process queues them.
        """
        maximize = study.direction == StudyDirection.MAXIMIZE
        going_on: list[list[Hashable]] = []
        population: Sequence[Hashable] = list(standing)
        for index, rung in enumerate(self.rungs):
            expected = self.points if index == 0 else len(population)
            there = [key for key in population if rung in standing[key].values]
            ended = [key for key in population if rung not in standing[key].values and self._ended(standing[key], rung)]
            if len(there) + len(ended) < expected:
                break

            def rank(key: Hashable, rung: int = rung) -> tuple[bool, float, str]:
                value = standing[key].values[rung]
                # Not a number ranks last; ties go to the point that sorts first, so every worker agrees.
                return (math.isnan(value), -value if maximize else value, repr(key))

            population = sorted(there, key=rank)[: self.keeps[index]]
            going_on.append(population)
        return going_on

    def _ended(self, point: _Point, rung: int) -> bool:
        """Whether a point that has not reached ``rung`` never will: it failed, or stopped short of it other than by waiting."""
        newest = point.newest
        if point.active or newest is None:
            return False
        reached = point.reached
        waiting = (newest.state == TrialState.PRUNED and reached in self.rungs and reached < rung
                   and not math.isnan(point.values[reached]))
        return not waiting


def is_halving(pruner: Any) -> bool:
    """Whether ``pruner`` pauses points at rungs, so that a study's work includes its promotions."""
    return isinstance(pruner, HalvingPruner)


def promote_waiting(study: optuna.Study) -> int:
    """Queue the waiting points that a rung of the study's halving pruner lets go on; how many (0 under other pruners)."""
    return study.pruner.promote(study) if is_halving(study.pruner) else 0


def halving_trials_left(study: optuna.Study) -> int | None:
    """At most the trials a halving study still has to run (failures aside), for a progress bar's total; None under other pruners.

    The grid runs a trial per point, and one more for each point that goes on past a rung, unless
    it goes on at once (the last point to reach a rung, among the best): an upper bound.
    """
    if not is_halving(study.pruner):
        return None
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return max(0, study.pruner.points + sum(study.pruner.keeps) - len(done))


def end_at_what_ran(bar: Any) -> None:
    """End a progress bar that counted to ``halving_trials_left``, an upper bound, at the trials that ran."""
    if bar.total and bar.n < bar.total:
        bar.total = bar.n  # a point that went on at once needed no retry
