"""``ConvergenceStop``: end a study once further trials are unlikely to improve its best.

The rule is early stopping lifted from epochs to trials: the study has converged when its last
``patience`` complete trials in a row improved the best value by no more than ``min_delta``
of the interquartile range of the values before each. A spread, not an absolute step, so that
one rule serves a loss and an accuracy; the interquartile range, not the whole range, so that
one diverged trial (a loss of 2.0 among losses of 0.1) does not make every later gain too small
to count. (Optuna's own ``optuna.terminator`` is deprecated since 4.9.)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from hpsearch.storage.attributes import CONVERGED_ATTR


@dataclass(frozen=True)
class ConvergenceStop:
    """Stop after ``patience`` complete trials in a row without a real improvement of the best."""

    patience: int
    min_delta: float = 0.01

    def trials_since_improvement(self, values: Sequence[float], direction: str) -> int:
        """How many of ``values`` (complete trials' values, in the order they ended) came after the last improvement."""
        sign = 1.0 if direction == "maximize" else -1.0
        best: float | None = None
        since = 0
        before: list[float] = []  # the values before this one, sorted
        for value in values:
            spread = _quantile(before, 0.75) - _quantile(before, 0.25)
            if best is None or sign * (value - best) > self.min_delta * spread:
                best, since = value, 0
            else:
                since += 1
                if sign * (value - best) > 0:
                    best = value  # a small gain still moves the bar the next trial must clear
            bisect.insort(before, value)
        return since

    def converged(self, values: Sequence[float], direction: str) -> bool:
        return self.trials_since_improvement(values, direction) >= self.patience

    def study_converged(self, study: optuna.Study) -> bool:
        """Whether ``study`` (single-objective) has converged, from its complete trials in the order they ended."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        complete.sort(key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
        direction = "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"
        return self.converged([t.value for t in complete if t.value is not None], direction)

    def record(self, study: optuna.Study) -> None:
        """Store on ``study`` that it converged (``CONVERGED_ATTR``): its complete trials, the patience, the best trial and value."""
        complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        best = study.best_trial
        study.set_user_attr(CONVERGED_ATTR, {"complete_trials": complete, "patience": self.patience,
                                             "best_trial": best.number, "best_value": best.value})


# Over a sorted list kept as the values come: numpy's percentile of each prefix cost 55 ms a call
# at 700 trials, and a simulation asks once per trial it starts.
def _quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of the sorted ``ordered`` (numpy's default, linear interpolation); 0 of none."""
    if not ordered:
        return 0.0
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
