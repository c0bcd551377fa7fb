"""``LearnsFromPruned``: a sampler that learns from a multi-objective study's pruned trials.

Optuna keeps no values for a pruned trial of several objectives, so its samplers know it only as
pruned. TPE counts such trials in the study when it sizes its group of good trials (a tenth of
all), then fills that group with every complete trial, good or not, and with pruned ones taken in
trial order: under the pareto pruner, which stops most trials, its proposals lose their aim and
ever more of them are pruned. Wrapped, the sampler sees each pruned trial as complete at the values
the pareto pruner stored for it (``storage.optuna_seam.PrunedAsComplete``): its objectives at the
rung, its training time carried on at its own pace. On lcbench (``benchmarks/lcbench_mo.py``, 30
seeds, before TPE's log scale) that, with the pruner's first rung at epoch 4, put pruning ahead of
no pruning at every fraction of the budget on all three instances, where it had ended behind on
one and level on two (README, "Several objectives, and budgets").

A study of one objective passes through unchanged: TPE already ranks pruned trials by their
reports.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from hpsearch.search.sampler_wrapper import SamplerWrapper
from hpsearch.storage.optuna_seam import PrunedAsComplete


class LearnsFromPruned(SamplerWrapper):
    """``sampler``, shown a multi-objective study's pruned trials as complete at their stand-in values."""

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(learned_from(study), trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.sampler.sample_relative(learned_from(study), trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.sampler.sample_independent(learned_from(study), trial, param_name, param_distribution)


def learned_from(study: optuna.Study) -> optuna.Study | PrunedAsComplete:
    """The trials a sampler of a multi-objective study learns from: pruned ones too, at their stand-in values."""
    return PrunedAsComplete(study) if len(study.directions) > 1 else study
