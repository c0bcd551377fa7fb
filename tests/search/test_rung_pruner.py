"""The rung pruner: one judgement at a third of the epochs, against every trial that got there."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpsearch.search.rung_pruner import RungPruner, third_rung
from hpsearch.search.samplers import make_pruner, pruner_rungs

DIST = {"x": FloatDistribution(0.0, 1.0)}


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def study_with(values_at_rung: list[tuple[TrialState, float]], direction: str = "maximize") -> optuna.Study:
    study = optuna.create_study(direction=direction, pruner=RungPruner(17))
    for state, value in values_at_rung:
        final = {"value": value + 0.1} if state == TrialState.COMPLETE else {}
        study.add_trial(
            create_trial(params={"x": 0.5}, distributions=DIST, state=state, intermediate_values={17: value}, **final)
        )
    return study


def judged(study: optuna.Study, value: float, step: int = 17) -> bool:
    trial = study.ask(DIST)
    trial.report(value, step)
    return trial.should_prune()


def test_below_the_median_of_every_trial_that_reached_the_rung_is_pruned():
    # Pruned trials count as much as complete ones: the median here is 0.5, where the complete
    # trials alone (0.7, 0.8, 0.9) would put it at 0.8.
    mixed = [(TrialState.PRUNED, v) for v in (0.1, 0.2, 0.3)] + [(TrialState.COMPLETE, v) for v in (0.7, 0.8, 0.9)]
    assert judged(study_with(mixed), 0.4)
    assert not judged(study_with(mixed), 0.6)


def test_a_minimized_value_is_pruned_above_the_median():
    losses = [(TrialState.COMPLETE, v) for v in (1.0, 2.0, 3.0, 4.0, 5.0)]
    assert judged(study_with(losses, "minimize"), 3.5)
    assert not judged(study_with(losses, "minimize"), 2.5)


def test_it_judges_only_at_its_rung_and_only_once_enough_trials_got_there():
    field = [(TrialState.COMPLETE, v) for v in (0.7, 0.8, 0.9, 0.95, 0.99)]
    assert not judged(study_with(field), 0.0, step=16)
    assert not judged(study_with(field), 0.0, step=18)
    assert not judged(study_with(field[:4]), 0.0)
    assert judged(study_with(field), 0.0)


def test_running_trials_count_and_a_nan_is_worse_than_any_value():
    study = study_with([(TrialState.PRUNED, v) for v in (0.2, 0.3, 0.4, 0.5)])
    running = study.ask(DIST)
    running.report(0.6, 17)  # the fifth trial at the rung, still running
    assert judged(study, 0.35)
    assert judged(study, math.nan)


def test_the_rung_is_a_third_of_the_epochs_and_never_the_warmup():
    assert third_rung(1, 52) == 17
    assert third_rung(2, 4) == 2
    assert pruner_rungs("rung", 52, 0) == (17,)
    assert pruner_rungs("rung", 1, 0) == ()  # the last epoch is never a rung
    pruner = make_pruner("rung", 10, 1.0)
    assert isinstance(pruner, RungPruner) and pruner.rung == 3


def test_a_pruned_trial_is_told_the_median_it_missed():
    study = study_with([(TrialState.COMPLETE, v) for v in (0.7, 0.8, 0.9, 0.95, 0.99)])
    trial = study.ask(DIST)
    trial.report(0.5, 17)
    assert trial.should_prune()
    assert study.pruner.explain(trial.number) == "worse than the median 0.9 of the 5 other trials that reached epoch 17"
    assert study.pruner.explain(trial.number + 1) is None
