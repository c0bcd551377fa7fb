"""``SamplerWrapper``: a sampler that hands every call to the sampler it wraps, for wrappers to override one or two;
``SeededPerTrial``, the one that seeds each trial's draws."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from hpsearch.storage.optuna_seam import reseed_sampler


class SamplerWrapper(optuna.samplers.BaseSampler):
    """``sampler`` unchanged: each method of Optuna's sampler API passed through."""

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.sampler = sampler

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


class SeededPerTrial(SamplerWrapper):
    """``sampler`` whose random draws for a trial come from ``seed`` and the trial's number.

    For workers: one seeded stream per process would draw the same values in every worker, and
    unseeded ones made ``--seed`` mean nothing to them. So any worker that starts trial N of a
    study with the same history draws what a single worker would have, and no two trials alike.
    """

    def __init__(self, sampler: optuna.samplers.BaseSampler, seed: int) -> None:
        super().__init__(sampler)
        self.seed = seed

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reseed_sampler(self.sampler, int(np.random.SeedSequence([self.seed, trial.number]).generate_state(1)[0]))
        self.sampler.before_trial(study, trial)
