"""A multi-objective study's pruned trials teach the sampler: TPE, wrapped, aims at what they stood at."""

from __future__ import annotations

import statistics

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpsearch.search.pruned_learning import LearnsFromPruned
from hpsearch.search.samplers import make_sampler


def test_tpe_of_several_objectives_samples_where_the_pruned_trials_stood_best():
    # Complete trials near x=0.1 are poor on both objectives; trials pruned near x=0.9 stood best.
    # Optuna's TPE alone knows the pruned ones only as pruned and aims at the complete ones.
    dist = {"x": FloatDistribution(0.0, 1.0)}

    def study_with(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
        study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
        for i in range(20):
            x = 0.05 + 0.005 * i
            study.add_trial(create_trial(params={"x": x}, distributions=dist, values=[1.0 + x, 1.0 + x]))
            study.add_trial(
                create_trial(
                    params={"x": 0.85 + 0.005 * i},
                    distributions=dist,
                    state=TrialState.PRUNED,
                    user_attrs={"pruned_values": [0.1 * i, 0.1 * (20 - i)]},  # a front of its own
                )
            )
        return study

    def sampled(sampler: optuna.samplers.BaseSampler) -> float:
        study = study_with(sampler)
        return statistics.median(study.ask(dist).params["x"] for _ in range(15))

    assert isinstance(make_sampler("tpe", 0).sampler, LearnsFromPruned)  # inside LogScaled
    assert sampled(make_sampler("tpe", 0)) > 0.6
    assert sampled(optuna.samplers.TPESampler(seed=0)) < 0.4  # what the wrapper changes


def test_a_single_objective_study_passes_through_unchanged():
    study = optuna.create_study(sampler=make_sampler("tpe", 3))
    plain = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3))
    for s in (study, plain):
        s.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.3) ** 2, n_trials=15)
    assert [t.params for t in study.trials] == [t.params for t in plain.trials]
