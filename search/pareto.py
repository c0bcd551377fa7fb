"""``ParetoPruner``: pruning for multi-objective studies, on the epoch table.

Optuna's ``Trial.report`` refuses multi-objective trials (Optuna #3450), so no Optuna pruner can
judge them. This one reads what every trial stored for its epochs through the recorder (the
study database's epoch table, or memory in a simulation).

The rule: a trial stops at a rung when a complete trial dominates even an optimistic guess of
where it will end. The guess moves each objective from its value at the rung by what the complete
trials gained from that epoch to their end, taking the ``GAIN_QUANTILE`` (three quarters) of
their gains in the better direction: a metric by the gain added, the training time by the factor
it grew by. Costs of the model (FLOPs, parameters) do not change. So a trial goes on while it
could still reach the Pareto front, which is all the hypervolume counts. The rungs double from
twice the first judged epoch, and not before epoch 4 (4, 8, 16 and 32 of lcbench's 52 epochs),
and a trial is judged once ``PARETO_MIN_COMPLETE`` trials have completed.

A pruned trial keeps what it stood at (``stand_in``, the ``pruned_values`` user attribute), which
the samplers learn from (``search/pruned_learning.py``).

On lcbench (``benchmarks/lcbench_mo.py``, accuracy against training time, TPE, 30 seeds) this is
ahead of no pruning at a quarter and at half of the budget on all three instances, and behind it
at the end; at half the budget it falls short of no pruning's full-budget hypervolume by 0.006 to
0.010 (README, "Several objectives, and budgets"). Given each trial's true end in place of the
guess (``benchmarks/lcbench_mo.py --bound``), the same rule meets that bar on all three: what
falls short is the guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from hpsearch.search.errors import UsageError
from hpsearch.search.goals import TIME_OBJECTIVE, Goal
from hpsearch.search.samplers import PARETO_MIN_COMPLETE, pruner_rungs
from hpsearch.storage.pareto import dominating

if TYPE_CHECKING:
    from hpsearch.storage.recorder import TrialRecorder

PARETO = "pareto"
GAIN_QUANTILE = 0.75


class ParetoPruner:
    """Stops a multi-objective trial at a rung when a complete trial dominates an optimistic guess of its end."""

    def __init__(
        self,
        goals: Sequence[Goal],
        rungs: Sequence[int],
        epochs: int,
        quantile: float = GAIN_QUANTILE,
        min_complete: int = PARETO_MIN_COMPLETE,
    ) -> None:
        self.goals, self.rungs, self.epochs = tuple(goals), frozenset(rungs), epochs
        self.quantile, self.min_complete = quantile, min_complete
        self.maximize = [goal.direction == "maximize" for goal in self.goals]
        # (trial number, epoch) -> a complete trial's values at the epoch and at its end, or None if
        # it has none: a complete trial never changes, so the epoch table is read again only
        # when a trial has completed since.
        self._ends: dict[tuple[int, int], tuple[list[float], list[float]] | None] = {}

    @classmethod
    def for_study(cls, pruner: str, goals: Sequence[Goal], epochs: int, warmup_epochs: float) -> ParetoPruner | None:
        """The Pareto pruner if ``pruner`` names it, at its doubling rungs; else None.

        ``UsageError`` for a single-objective study given ``pareto`` (it has pruners of its own:
        percentile, sha, ...), and for a multi-objective study given one of those, which judge one
        objective through Optuna's reports.
        """
        if len(goals) > 1 and pruner not in (PARETO, "none"):
            raise UsageError(f"--pruner {pruner} judges one objective; a study of several (--objectives) takes pareto or none")
        if pruner != PARETO:
            return None
        if len(goals) < 2:
            raise UsageError(
                f"--pruner pareto ranks trials on several objectives, but this study has one ({goals[0].name}); "
                "pass --objectives (e.g. val_loss,flops) or choose another pruner, such as percentile"
            )
        return cls(goals, pruner_rungs(PARETO, epochs, warmup_epochs), epochs)

    def prune_reason(
        self, trial: optuna.Trial, recorder: TrialRecorder, rows: Sequence[Mapping[str, Any]], costs: Mapping[str, Any]
    ) -> str | None:
        """Why ``trial`` stops after its epoch rows ``rows`` (with cost attributes ``costs``), or None if it goes on."""
        epoch = int(rows[-1]["epoch"])
        if epoch not in self.rungs:
            return None
        own = [goal.value(rows, costs) for goal in self.goals]
        if any(math.isnan(v) for v in own):
            return None  # nothing to judge it by; the divergence guard judges non-finite losses
        ends = self._complete_ends(trial, recorder, epoch)
        if len(ends) < self.min_complete:
            return None
        guess = self._optimistic_end(own, ends)
        numbers = list(ends)
        better = np.flatnonzero(dominating(np.array([ends[n][1] for n in numbers]), guess, self.maximize))
        if not len(better):
            return None
        number = numbers[better[0]]

        def shown(values: Sequence[float]) -> str:
            return ", ".join(f"{goal.name}={value:.4g}" for goal, value in zip(self.goals, values))

        return (
            f"pruned by the pareto pruner at epoch {epoch}: {shown(own)}; trial {number} ({shown(ends[number][1])}) "
            f"dominates even its optimistic end ({shown(guess)}: the {self.quantile:.0%} best change after epoch "
            f"{epoch} of the {len(ends)} complete trials)"
        )

    def stand_in(self, rows: Sequence[Mapping[str, Any]], costs: Mapping[str, Any]) -> list[float]:
        """The values a trial pruned after ``rows`` stands in with for the samplers (``PRUNED_VALUES_ATTR``).

        Each objective at the trial's last epoch, a pessimistic stand-in for a metric still
        improving, except the training time, carried on at the trial's own pace to the last epoch:
        at the rung it would read as a fast trial, which it is not.
        """
        epoch = int(rows[-1]["epoch"])
        return [
            goal.value(rows, costs) * (self.epochs / epoch if goal.name == TIME_OBJECTIVE else 1.0) for goal in self.goals
        ]

    def _complete_ends(
        self, trial: optuna.Trial, recorder: TrialRecorder, epoch: int
    ) -> dict[int, tuple[list[float], list[float]]]:
        """For each complete trial that ran past ``epoch``: its objective values at ``epoch`` and at its end."""
        complete = {t.number: t.user_attrs for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        if any((number, epoch) not in self._ends for number in complete):
            table = recorder.epoch_rows(trial, self.epochs)
            for number, attrs in complete.items():
                rows = table.get(number, [])
                end = None
                if len(rows) > epoch and rows[epoch - 1]["epoch"] == epoch:
                    at, final = ([goal.value(part, attrs) for goal in self.goals] for part in (rows[:epoch], rows))
                    end = None if any(math.isnan(v) for v in (*at, *final)) else (at, final)
                self._ends[number, epoch] = end
        return {n: end for n in complete if (end := self._ends[n, epoch]) is not None}

    def _optimistic_end(self, own: Sequence[float], ends: Mapping[int, tuple[list[float], list[float]]]) -> list[float]:
        """``own`` moved by the complete trials' change after the rung, at ``quantile`` in each objective's better direction."""
        guess = []
        for i, (goal, maximize) in enumerate(zip(self.goals, self.maximize)):
            level = self.quantile if maximize else 1 - self.quantile
            if goal.name == TIME_OBJECTIVE:  # time grows with the epochs: by a factor, the trial's own pace
                factors = [final[i] / at[i] for at, final in ends.values() if at[i] > 0]
                guess.append(own[i] * float(np.quantile(factors, level)) if factors else own[i])
            else:
                guess.append(own[i] + float(np.quantile([final[i] - at[i] for at, final in ends.values()], level)))
        return guess

