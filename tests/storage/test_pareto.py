import numpy as np
import optuna
import pytest

from hpsearch.storage.export import trials_frame
from hpsearch.storage.pareto import dominating, pareto_mask


def test_mask_marks_exactly_the_non_dominated_rows():
    values = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2], [np.nan, 0]], dtype=float)
    assert pareto_mask(values, [False, False]).tolist() == [True, True, True, False, True, False]
    # Maximizing the second objective flips who wins.
    assert pareto_mask(values, [False, True]).tolist() == [True, False, False, False, False, False]


def test_dominating_marks_the_rows_no_worse_everywhere_and_better_somewhere():
    values = np.array([[1, 5], [2, 2], [2, 3], [3, 3], [1, 1], [np.nan, 0]], dtype=float)
    # [2, 3] ties the point; [1, 1] is better in both; [2, 2] better in one, level in the other.
    assert dominating(values, [2, 3], [False, False]).tolist() == [False, True, False, False, True, False]
    # Maximizing the second objective: only rows with a first value <= 2 and a second >= 3.
    assert dominating(values, [2, 3], [False, True]).tolist() == [True, False, False, False, False, False]
    assert dominating(np.empty((0, 2)), [2, 3], [False, False]).tolist() == []


@pytest.mark.parametrize("directions", [["minimize", "minimize"], ["minimize", "maximize"], ["maximize", "minimize", "minimize"]])
def test_export_front_equals_optunas_best_trials(sqlite_url, directions):
    rng = np.random.default_rng(0)
    study = optuna.create_study(study_name="front", storage=sqlite_url, directions=directions)
    distribution = optuna.distributions.FloatDistribution(0, 1)
    for i in range(60):
        values = rng.integers(0, 6, size=len(directions)).astype(float).tolist()  # ties on purpose
        state = optuna.trial.TrialState.PRUNED if i % 7 == 0 else optuna.trial.TrialState.COMPLETE
        study.add_trial(optuna.trial.create_trial(
            params={"x": float(i) / 60}, distributions={"x": distribution}, state=state,
            values=values if state == optuna.trial.TrialState.COMPLETE else None,
        ))
    frame = trials_frame(sqlite_url, "front")
    exported = set(frame.loc[frame["pareto"], "number"])
    assert exported == {t.number for t in study.best_trials}
    assert 0 < len(exported) < 60
