"""ConvergenceStop: a study converges after `patience` complete trials without a real improvement."""

import pytest

from hpsearch.search.convergence import ConvergenceStop


@pytest.mark.parametrize(
    ("values", "direction", "since"),
    [
        ([0.5, 0.6, 0.7], "maximize", 0),
        ([0.7, 0.6, 0.5, 0.65], "maximize", 3),
        ([0.7, 0.6, 0.5], "minimize", 0),
        ([0.5, 0.9, 0.6, 0.7], "minimize", 3),
        # 0.9001 beats 0.9 by less than 1% of the interquartile range before it (0.2): no real improvement
        ([0.5, 0.9, 0.9001, 0.6], "maximize", 2),
        ([], "maximize", 0),
    ],
)
def test_trials_since_the_last_real_improvement(values, direction, since):
    assert ConvergenceStop(patience=3).trials_since_improvement(values, direction) == since


def test_small_gains_move_the_bar():
    # Each step gains under 1% of the interquartile range: none counts, yet the bar rises with them.
    stop = ConvergenceStop(patience=3)
    values = [0.0, 0.0, 1.0, 1.001, 1.002, 1.003]
    assert stop.trials_since_improvement(values, "maximize") == 3 and stop.converged(values, "maximize")
    assert not stop.converged(values[:-1], "maximize")


def test_one_diverged_trial_does_not_hide_later_gains():
    # A new user's val_loss study: one trial at 2.02 made the spread 1.9, so trial 7's gain from
    # 0.0933 to 0.0857 (8%) did not count and the study stopped early. The interquartile range ignores it.
    values = [0.30, 0.15, 2.02, 0.12, 0.0933, 0.20, 0.11, 0.0857, 0.14, 0.10]
    assert ConvergenceStop(patience=3).trials_since_improvement(values, "minimize") == 2
    assert ConvergenceStop(patience=3).trials_since_improvement(values[:8], "minimize") == 0
