"""``Goal``: one value a study optimizes, and how it is read from a trial's epoch rows and attributes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpsearch.storage.attributes import PARAMS_COUNT_ATTR

# Objectives that are costs of the model rather than metrics of its training, and the user
# attribute each is read from; and the cost of training so far: the epochs' seconds, summed.
COST_OBJECTIVES = {"flops": "flops.per_sample_forward", "params": PARAMS_COUNT_ATTR}
TIME_OBJECTIVE = "time"


@dataclass(frozen=True)
class Goal:
    """One value the study optimizes: a metric of the last epoch, a cost of the model, or the training time."""

    name: str
    direction: str

    @property
    def is_cost(self) -> bool:
        return self.name in COST_OBJECTIVES or self.name == TIME_OBJECTIVE

    def value(self, rows: Sequence[Mapping[str, Any]], attrs: Mapping[str, Any]) -> float:
        """Its value after the epoch rows ``rows`` (oldest first) of a trial with user attributes ``attrs``.

        NaN for a cost the trial has not recorded yet. The Pareto pruner judges trials at an epoch
        with this, and a trial's final values are this after its last epoch.
        """
        if self.name in COST_OBJECTIVES:
            return float(attrs.get(COST_OBJECTIVES[self.name], math.nan))
        if self.name == TIME_OBJECTIVE:
            return math.fsum(math.nan if r.get("epoch_seconds") is None else r["epoch_seconds"] for r in rows)
        return float(rows[-1][self.name])
