"""``LogScaled``: a sampler that searches a linear range of several decades on a log scale.

A range declared linear whose bounds lie ``LOG_SCALE_DECADES`` decades apart or more (lcbench's
weight decay, 1e-5 to 0.1) is handed to the sampler as log: an input warping. On the linear scale
a uniform design puts 99% of its points in the top two of such a range's decades, a GP, smooth in the
linear value, reads a small weight decay and the bound as one, and TPE's kernels, as wide as the
gaps between its observations, spread over the top decades. The trials still take values in the
declared range, and the stored distribution is the user's.

On lcbench 167168, at a quarter of the budget, the GP's mean regret went from 0.0424 to 0.0034
(30 seeds); on 189873 TPE's final regret went from 0.1185 to -0.0310 (no pruner, seeds 0..9;
README, "How the default strategy was chosen").
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from hpsearch.search.sampler_wrapper import SamplerWrapper

# A linear range whose bounds are this many decades apart or more is searched on a log scale.
LOG_SCALE_DECADES = 3


def log_scaled_distribution(distribution: BaseDistribution) -> BaseDistribution:
    """``distribution`` made log if it is a linear range over ``LOG_SCALE_DECADES`` decades or more (positive, unstepped)."""
    if isinstance(distribution, (FloatDistribution, IntDistribution)) and not distribution.log:
        unstepped = distribution.step == (1 if isinstance(distribution, IntDistribution) else None)
        if unstepped and distribution.low > 0 and distribution.high >= distribution.low * 10**LOG_SCALE_DECADES:
            return type(distribution)(distribution.low, distribution.high, log=True)
    return distribution


def log_scaled(search_space: dict[str, BaseDistribution]) -> dict[str, BaseDistribution]:
    """``search_space`` with each linear range over ``LOG_SCALE_DECADES`` decades or more (positive, unstepped) made log."""
    return {name: log_scaled_distribution(distribution) for name, distribution in search_space.items()}


class LogScaled(SamplerWrapper):
    """``sampler``, shown each linear range of ``LOG_SCALE_DECADES`` decades or more as a log one."""

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.sampler.sample_relative(study, trial, log_scaled(search_space))

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.sampler.sample_independent(study, trial, param_name, log_scaled_distribution(param_distribution))
