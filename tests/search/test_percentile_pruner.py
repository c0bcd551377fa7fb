"""The percentile and median pruners decide as Optuna's do, and say the bar a pruned trial missed."""

from __future__ import annotations

import optuna
import pytest

from hpsearch.search.percentile_pruner import ExplainedMedianPruner, ExplainedPercentilePruner

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run(pruner: optuna.pruners.BasePruner, direction: str, curves: list[list[float]]) -> list[bool]:
    """Each curve reported as a trial's epochs 1.. in turn; whether its last report was pruned."""
    study = optuna.create_study(direction=direction, pruner=pruner)
    verdicts = []
    for curve in curves:
        trial = study.ask()
        pruned = False
        for epoch, value in enumerate(curve, start=1):
            trial.report(value, epoch)
            if trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, curve[-1])
        verdicts.append(pruned)
    return verdicts


@pytest.mark.parametrize(("explained", "plain"), [
    (lambda: ExplainedPercentilePruner(25.0, n_startup_trials=2, n_warmup_steps=1),
     lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=2, n_warmup_steps=1)),
    (lambda: ExplainedMedianPruner(n_startup_trials=2, n_warmup_steps=1),
     lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)),
])
@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_the_verdicts_are_optunas(explained, plain, direction):
    curves = [[5.0, 4.0, 3.0], [4.0, 2.0, 1.0], [6.0, 5.0, 4.0], [3.0, 1.5, 1.0], [5.0, 3.0, 2.5], [2.0, 1.0, 0.5]]
    assert run(explained(), direction, curves) == run(plain(), direction, curves)


def test_a_pruned_trial_is_told_the_bar_it_missed_and_how_many_trials_set_it():
    pruner = ExplainedPercentilePruner(25.0, n_startup_trials=2, n_warmup_steps=1)
    # Inside the bar at epoch 1 (3.1 against 3.25); at epoch 2 the complete trials stood at 2.0 and 1.0,
    # whose 25th percentile is 1.25, and the trial's best so far is 3.0.
    assert run(pruner, "minimize", [[4.0, 2.0], [3.0, 1.0], [3.1, 3.0]]) == [False, False, True]
    assert pruner.explain(2) == "its best so far (3) is worse than 1.25, the bar of the best 25% of the 2 complete trials at epoch 2"
    assert pruner.explain(0) is None  # not pruned: nothing to say

    median = ExplainedMedianPruner(n_startup_trials=2, n_warmup_steps=1)
    assert run(median, "maximize", [[0.4, 0.6], [0.5, 0.8], [0.45, 0.5]]) == [False, False, True]
    assert median.explain(2) == "its best so far (0.5) is worse than 0.7, the median of the 2 complete trials at epoch 2"
