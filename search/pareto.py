"""``ParetoPruner``: pruning for multi-objective studies, on the epoch table.

Optuna's ``Trial.report`` refuses multi-objective trials (Optuna #3450), so no Optuna pruner can
judge them. This one reads what every trial stored for its epochs through the recorder (the
study database's epoch table, or memory in a simulation) and judges a trial at a rung against
the trials that reached the same epoch, on all the study's objectives at that epoch.

The rule: at each rung, the trials that reached the epoch are sorted into non-dominated fronts
(front 1 is their Pareto front). A trial goes on if the trials in better fronts than its own
are fewer than ``KEEP_FRACTION`` (half) of them; that is, the fronts kept are those that hold
the better half. The first front always goes on. A trial is judged once ``MIN_PEERS`` other
trials reached the epoch. The rungs are successive halving's after its first (``samplers``):
at the first judged epoch a cost such as time is already exact while accuracy still misranks,
so the fronts would be sorted by cost alone; on lcbench, judging there and keeping a third lost
hypervolume (benchmarks/lcbench_mo.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from hpsearch.search.errors import UsageError
from hpsearch.search.samplers import pruner_rungs
from hpsearch.storage.pareto import nondominated_ranks

if TYPE_CHECKING:
    from hpsearch.search.goals import Goal
    from hpsearch.storage.recorder import TrialRecorder

PARETO = "pareto"
KEEP_FRACTION = 1 / 2
MIN_PEERS = 4
# The trials a trial is compared with: a failed trial's last epochs may be what failed it.
PEER_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class ParetoPruner:
    """Judges a multi-objective trial at its rungs by its non-dominated front among the trials at that epoch."""

    def __init__(
        self, goals: Sequence[Goal], rungs: Sequence[int], keep: float = KEEP_FRACTION, min_peers: int = MIN_PEERS
    ) -> None:
        self.goals, self.rungs, self.keep, self.min_peers = tuple(goals), frozenset(rungs), keep, min_peers
        self.maximize = [goal.direction == "maximize" for goal in self.goals]

    @classmethod
    def for_study(cls, pruner: str, goals: Sequence[Goal], epochs: int, warmup_epochs: float) -> ParetoPruner | None:
        """The Pareto pruner if ``pruner`` names it, at the successive-halving rungs; else None.

        ``UsageError`` for a single-objective study given ``pareto`` (it has pruners of its own:
        percentile, sha, ...), and for a multi-objective study given one of those, which judge one
        objective through Optuna's reports.
        """
        if len(goals) > 1 and pruner not in (PARETO, "none"):
            raise UsageError(f"--pruner {pruner} judges one objective; a study of several (--objectives) takes pareto or none")
        if pruner != PARETO:
            return None
        if len(goals) < 2:
            raise UsageError(
                f"--pruner pareto ranks trials on several objectives, but this study has one ({goals[0].name}); "
                "pass --objectives (e.g. val_loss,flops) or choose another pruner, such as percentile"
            )
        return cls(goals, pruner_rungs(PARETO, epochs, warmup_epochs))

    def prune_reason(
        self, trial: optuna.Trial, recorder: TrialRecorder, rows: Sequence[Mapping[str, Any]], costs: Mapping[str, Any]
    ) -> str | None:
        """Why ``trial`` stops after its epoch rows ``rows`` (with cost attributes ``costs``), or None if it goes on."""
        epoch = int(rows[-1]["epoch"])
        if epoch not in self.rungs:
            return None
        own = [goal.value(rows, costs) for goal in self.goals]
        if any(math.isnan(v) for v in own):
            return None  # nothing to rank it by; the divergence guard judges non-finite losses
        peers = self._peers(trial, recorder, epoch)
        if len(peers) < self.min_peers:
            return None
        ranks = nondominated_ranks(np.array([own, *peers]), self.maximize)
        ahead = int((ranks < ranks[0]).sum())
        reached = len(ranks)
        if ahead < self.keep * reached:
            return None
        values = ", ".join(f"{goal.name}={value:.4g}" for goal, value in zip(self.goals, own))
        return (
            f"pruned by the pareto pruner at epoch {epoch}: {values}; in front {ranks[0] + 1}, behind {ahead} of the "
            f"{reached} trials that reached this epoch (it keeps the fronts holding the best {self.keep:.0%})"
        )

    def _peers(self, trial: optuna.Trial, recorder: TrialRecorder, epoch: int) -> list[list[float]]:
        """The objective values at ``epoch`` of the other trials that reached it and can be ranked."""
        attrs = {t.number: t.user_attrs for t in trial.study.get_trials(deepcopy=False, states=PEER_STATES)}
        peers = []
        for number, rows in recorder.epoch_rows(trial, epoch).items():
            if number == trial.number or number not in attrs or not rows or rows[-1]["epoch"] != epoch:
                continue
            values = [goal.value(rows, attrs[number]) for goal in self.goals]
            if not any(math.isnan(v) for v in values):
                peers.append(values)
        return peers
