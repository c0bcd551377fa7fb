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
        # 0.9001 beats 0.9 by less than 1% of the spread (0.4): no real improvement
        ([0.5, 0.9, 0.9001, 0.6], "maximize", 2),
        ([], "maximize", 0),
    ],
)
def test_trials_since_the_last_real_improvement(values, direction, since):
    assert ConvergenceStop(patience=3).trials_since_improvement(values, direction) == since


def test_small_gains_move_the_bar():
    # Each step gains under 1% of the spread: none counts, yet the bar rises with them.
    stop = ConvergenceStop(patience=3)
    values = [0.0, 1.0, 1.001, 1.002, 1.003]
    assert stop.trials_since_improvement(values, "maximize") == 3 and stop.converged(values, "maximize")
    assert not stop.converged(values[:-1], "maximize")
