"""Optuna's percentile and median pruners, which also say what a pruned trial missed (its ``prune_reason``)."""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState


class _SaysWhy:
    """Keeps, for each trial it prunes, the bar it missed: Optuna's rule, the percentile of the complete trials' values at the step."""

    percentile: float

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        pruned = super().prune(study, trial)  # type: ignore[misc]
        step = trial.last_step
        if pruned and step is not None:
            values = [t.intermediate_values[step] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                      if step in t.intermediate_values and not math.isnan(t.intermediate_values[step])]
            own = [v for v in trial.intermediate_values.values() if not math.isnan(v)]
            if values and own:
                maximize = study.direction == StudyDirection.MAXIMIZE
                bar = float(np.percentile(values, 100 - self.percentile if maximize else self.percentile))
                self._bars[trial.number] = (max(own) if maximize else min(own), bar, len(values), step)
        return pruned

    def explain(self, trial_number: int) -> str | None:
        """Why the trial was pruned, as its ``prune_reason`` ends: its best value, the bar it missed and from how many trials."""
        if trial_number not in self._bars:
            return None
        best, bar, count, step = self._bars[trial_number]
        what = "the median" if self.percentile == 50 else f"the bar of the best {self.percentile:g}%"
        return (f"its best so far ({best:.4g}) is worse than {bar:.4g}, {what} of the {count} complete "
                f"trial{'s' if count != 1 else ''} at epoch {step}")


class ExplainedPercentilePruner(_SaysWhy, optuna.pruners.PercentilePruner):
    """``optuna.pruners.PercentilePruner`` that says what each trial it pruned missed."""

    def __init__(self, percentile: float, n_startup_trials: int, n_warmup_steps: int) -> None:
        super().__init__(percentile, n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)
        self.percentile = percentile
        self._bars: dict[int, tuple[float, float, int, int]] = {}


class ExplainedMedianPruner(_SaysWhy, optuna.pruners.MedianPruner):
    """``optuna.pruners.MedianPruner`` that says what each trial it pruned missed."""

    def __init__(self, n_startup_trials: int, n_warmup_steps: int) -> None:
        super().__init__(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)
        self.percentile = 50.0
        self._bars: dict[int, tuple[float, float, int, int]] = {}
