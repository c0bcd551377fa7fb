import numpy as np
import optuna
import pytest

from hpsearch.storage.export import trials_frame
from hpsearch.storage.pareto import nondominated_ranks, pareto_mask


def test_mask_marks_exactly_the_non_dominated_rows():
    values = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2], [np.nan, 0]], dtype=float)
    assert pareto_mask(values, [False, False]).tolist() == [True, True, True, False, True, False]
    # Maximizing the second objective flips who wins.
    assert pareto_mask(values, [False, True]).tolist() == [True, False, False, False, False, False]


def test_ranks_peel_the_fronts_one_after_another():
    values = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2], [np.nan, 0], [4, 4], [6, 6], [3, 4]], dtype=float)
    # Fronts: [1,5], [2,2] (twice: equal rows share a front) and [5,1]; then the chain [3,3] < [3,4] <
    # [4,4] < [6,6], one front each; the NaN row after them all.
    assert nondominated_ranks(values, [False, False]).tolist() == [0, 0, 0, 1, 0, 5, 3, 4, 2]
    assert (nondominated_ranks(values, [False, False]) == 0).tolist() == pareto_mask(values, [False, False]).tolist()
    # Maximizing both: [6,6] alone first; then [1,5], [5,1], [4,4]; then [3,4], [3,3], [2,2] one by one.
    assert nondominated_ranks(values, [True, True]).tolist() == [1, 4, 1, 3, 4, 5, 1, 0, 2]
    assert nondominated_ranks(np.empty((0, 2)), [False, False]).tolist() == []


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
