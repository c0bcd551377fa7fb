"""``SamplerWrapper`` passes every call through: a wrapped sampler samples as the sampler alone."""

from __future__ import annotations

import optuna

from hpsearch.search.sampler_wrapper import SamplerWrapper


def test_a_wrapped_sampler_samples_what_it_would_alone():
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def objective(trial: optuna.Trial) -> float:
        return (trial.suggest_float("x", -1, 1) - 0.3) ** 2 + trial.suggest_int("n", 1, 8)

    wrapped = optuna.create_study(
        sampler=SamplerWrapper(optuna.samplers.TPESampler(seed=2, n_startup_trials=3, multivariate=True))
    )
    alone = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=2, n_startup_trials=3, multivariate=True))
    for study in (wrapped, alone):
        study.optimize(objective, n_trials=12)
    assert [t.params for t in wrapped.trials] == [t.params for t in alone.trials]
