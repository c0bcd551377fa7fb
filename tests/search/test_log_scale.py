"""``LogScaled``: the model-based samplers search a linear range of several decades on a log scale."""

from __future__ import annotations

import math
import statistics

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import create_trial

from hpsearch.search.gp_sampler import SobolStartGPSampler
from hpsearch.search.log_scale import LogScaled, log_scaled
from hpsearch.search.samplers import make_sampler

WIDE = {"weight_decay": FloatDistribution(1e-5, 1e-1)}


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def valley(decay: float) -> float:
    """Lowest at 1e-4, a thousandth of WIDE's range: on the linear scale next to the bound."""
    return (math.log10(decay) + 4) ** 2


def test_a_linear_range_of_several_decades_is_searched_on_a_log_scale_and_others_as_declared():
    space = {
        "weight_decay": FloatDistribution(1e-5, 1e-1),  # four decades
        "lr": FloatDistribution(1e-4, 1e-2),  # two
        "dropout": FloatDistribution(0.0, 1.0),  # from zero: no decades to count
        "stepped": FloatDistribution(1e-5, 1e-1, step=1e-5),
        "tokens": IntDistribution(1, 10_000),
        "even": IntDistribution(2, 10_000, step=2),
    }
    scaled = log_scaled(space)
    assert {name for name, d in scaled.items() if d.log} == {"weight_decay", "tokens"}
    assert scaled["weight_decay"] == FloatDistribution(1e-5, 1e-1, log=True)
    assert {name: scaled[name] for name in ("lr", "dropout", "stepped", "even")} == {
        name: space[name] for name in ("lr", "dropout", "stepped", "even")
    }


def test_the_design_covers_each_decade_of_a_wide_linear_range():
    # On the linear scale 8 design points would all lie above 1e-3 in about eleven designs of twelve;
    # on the log scale each eighth of the four decades gets one.
    study = optuna.create_study(sampler=LogScaled(SobolStartGPSampler(seed=0, startup=10)))
    points = []
    for _ in range(9):
        trial = study.ask(WIDE)
        points.append(trial.params["weight_decay"])
        study.tell(trial, 0.0)
    assert all(1e-5 <= p <= 1e-1 for p in points)
    assert sorted(int((math.log10(p) + 5) / 4 * 8) for p in points[1:]) == list(range(8))
    assert study.trials[-1].distributions["weight_decay"] == WIDE["weight_decay"]  # stored as the user declared it


def test_the_gp_finds_a_low_point_in_the_first_decade_of_a_wide_linear_range():
    study = optuna.create_study(sampler=make_sampler("gp", 0))
    decays = (1e-5, 3e-5, 1e-3, 3e-3, 1e-2, 0.02, 0.03, 0.06, 0.08, 0.1)
    study.add_trials([create_trial(params={"weight_decay": w}, distributions=WIDE, value=valley(w)) for w in decays])
    chosen = study.ask(WIDE).params["weight_decay"]
    assert 3e-5 < chosen < 3e-4, chosen


def test_tpe_finds_a_low_point_in_the_first_decade_of_a_wide_linear_range():
    # TPE's kernels are as wide as the gaps between its observations: on the linear scale the
    # good trials' kernels spread over the top decades, and its proposals land there.
    def proposals(sampler: optuna.samplers.BaseSampler) -> float:
        study = optuna.create_study(sampler=sampler)
        decays = [10 ** (-5 + 4 * i / 19) for i in range(20)]
        study.add_trials(
            [create_trial(params={"weight_decay": w}, distributions=WIDE, value=valley(w)) for w in decays]
        )
        return statistics.median(study.ask(WIDE).params["weight_decay"] for _ in range(15))

    assert 3e-5 < proposals(make_sampler("tpe", 0)) < 3e-4
    assert proposals(optuna.samplers.TPESampler(seed=0)) > 1e-3  # what the wrapper changes
