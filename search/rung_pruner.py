"""The pruner the GP sampler runs under: one judgement, a third of the way through a trial."""

from __future__ import annotations

import math
import statistics

import optuna
from optuna.study import StudyDirection

from hpsearch.search.samplers import MIN_TRIALS_AT_RUNG


def third_rung(first: int, epochs: int) -> int:
    """The epoch the rung pruner judges at: a third of the epochs, and not before the first judged epoch."""
    return max(first, epochs // 3)


class RungPruner(optuna.pruners.BasePruner):
    """Stops a trial at epoch ``rung`` when its value there is worse than the median of the other trials' values there.

    Every trial that reached the rung counts, whether it completed, was pruned or is still
    running, as in asynchronous successive halving: the bar stays the median of all comers
    instead of rising as only the survivors complete. It judges once ``min_trials`` other trials
    have reached the rung, and at no other epoch: on learning curves, configurations that learn
    slowly and end best trail the field in the first epochs (README, "How the default strategy
    was chosen"). A value that is not a number is worse than any.
    """

    def __init__(self, rung: int, min_trials: int = MIN_TRIALS_AT_RUNG) -> None:
        self.rung, self.min_trials = rung, min_trials
        self._bars: dict[int, tuple[float, int]] = {}  # trial number -> (median, trials) it was judged against

    def explain(self, trial_number: int) -> str | None:
        """Why the trial was pruned, as its ``prune_reason`` ends: the median it missed and of how many trials."""
        if trial_number not in self._bars:
            return None
        median, count = self._bars[trial_number]
        return f"worse than the median {median:.4g} of the {count} other trials that reached epoch {self.rung}"

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.last_step != self.rung:
            return False
        mine = trial.intermediate_values[self.rung]
        others = [
            t.intermediate_values[self.rung]
            for t in study.get_trials(deepcopy=False)
            if t.number != trial.number and self.rung in t.intermediate_values
        ]
        others = [v for v in others if not math.isnan(v)]
        if len(others) < self.min_trials:
            return False
        median = statistics.median(others)
        self._bars[trial.number] = (median, len(others))
        if math.isnan(mine):
            return True
        return mine < median if study.direction == StudyDirection.MAXIMIZE else mine > median
