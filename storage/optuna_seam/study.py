"""The study and sampler side (6, 7, 8, 10 and 11 of the package's docstring): the take in one
call, a batch queued at once, QMC points by trial number, pruned trials read as complete, and the
heartbeat of the storage proxy's client."""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from hpsearch.storage.attributes import PRUNED_VALUES_ATTR


class NumberedQMCSampler(optuna.samplers.QMCSampler):
    """``QMCSampler`` whose trial number ``n`` takes point ``n - first_number`` of the sequence (10 of the package's docstring).

    Trial numbers are unique in a study, so workers asking at once draw different points, and a
    study sampled by one worker draws the points Optuna's own counter would have given it, as
    long as its trials from ``first_number`` on are all the sequence's.
    """

    def __init__(self, *args: Any, first_number: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_number = first_number
        self._sampling = threading.local()  # the trial number of the sample_relative call running in this thread

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        self._sampling.number = trial.number
        return super().sample_relative(study, trial, search_space)

    def _find_sample_id(self, study: optuna.Study, search_space: dict[str, Any]) -> int:
        return max(self._sampling.number - self.first_number, 0)


class QueueTakingStudy(optuna.Study):
    """``optuna.Study`` whose ``ask`` takes a queued trial in one call to a storage that can (11 of the package's docstring).

    ``taking_queued_trials_at_once`` makes a loaded study one.
    """

    def _pop_waiting_trial_id(self) -> int | None:
        cache = self._storage if isinstance(self._storage, _CachedStorage) else None
        take = getattr(self._storage if cache is None else cache._backend, "take_waiting_trial", None)
        if take is None:
            return super()._pop_waiting_trial_id()
        taken = take(self._study_id)
        if taken is not None and cache is not None and taken not in cache._trial_id_to_study_id_and_number:
            # Optuna's cache sets a parameter only on a trial it has read: this one was queued since its last read.
            cache.get_all_trials(self._study_id, deepcopy=False)
        return taken


def taking_queued_trials_at_once(study: optuna.Study) -> optuna.Study:
    """``study``, whose ``ask`` now takes a queued trial as :class:`QueueTakingStudy` does."""
    study.__class__ = QueueTakingStudy
    return study


def enqueue_points(study: optuna.Study, points: Sequence[Mapping[str, Any]]) -> None:
    """``study.enqueue_trial(point)`` for each point, in that order; in one transaction on a ``QueuedRDBStorage``."""
    storage = getattr(study._storage, "_backend", study._storage)  # the database behind Optuna's cache
    create_waiting_trials = getattr(storage, "create_waiting_trials", None)  # QueuedRDBStorage's, or the proxy client's
    if create_waiting_trials is not None:
        create_waiting_trials(study._study_id, points)
        return
    for point in points:
        study.enqueue_trial(dict(point))


# --- 6. Heartbeats through the storage proxy. -----------------------------------------------------
# Optuna runs a trial's heartbeat thread, and fails stale trials, only for a storage that is an
# instance of its private ``BaseHeartbeat``; its gRPC client is not one. The storage proxy's client
# (``storage/proxy_client.py``) derives from it, so that a worker behind the proxy beats.
class HeartbeatStorage(BaseHeartbeat):
    """``BaseHeartbeat`` for a storage whose stale trials are failed elsewhere (by the proxy), so it reports none.

    Its clients cannot read other trials' heartbeats; the proxy fails stale trials itself
    (``storage/proxy.py``). Subclasses implement the public heartbeat methods.
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return []


# --- 7. What the GP sampler learns from. ----------------------------------------------------------
class PrunedAsComplete:
    """A view of a study in which each pruned trial reads as complete, at a stand-in for its end.

    Samplers fit complete trials only (``GPSampler`` reads them through the private
    ``Study._get_trials``), so a pruned trial's region stays unknown to them and they sample there
    again. The stand-in is pessimistic: in a study of one objective, the trial's last report (its
    curve was still improving when it was judged worse than its peers); in a study of several,
    the values the pareto pruner stored (``PRUNED_VALUES_ATTR``). Pruned trials without a finite
    stand-in stay out: stopped before reporting, diverged, or (of several objectives) stopped by
    anything but the pareto pruner. Everything else is the study's own.
    """

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Sequence[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        # Pruned trials are read only where they are to be shown, as complete ones.
        shown = states if states is None or TrialState.COMPLETE not in states else (*states, TrialState.PRUNED)
        several = len(self._study.directions) > 1
        trials = []
        for trial in self._study._get_trials(deepcopy=deepcopy, states=shown, use_cache=use_cache):
            if trial.state == TrialState.PRUNED:
                if states is not None and TrialState.COMPLETE not in states:
                    continue  # asked for pruned trials by name: in this view there are none
                values = stand_in_values(trial, several)
                if values is None:
                    continue
                trial = copy.copy(trial)
                trial.state, trial.values = TrialState.COMPLETE, values
            trials.append(trial)
        return trials

    def get_trials(
        self, deepcopy: bool = True, states: Sequence[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)


def stand_in_values(trial: FrozenTrial, several_objectives: bool) -> list[float] | None:
    """The values a pruned trial stands in with (``PrunedAsComplete``), or None if it has no finite ones."""
    if several_objectives:
        values = trial.user_attrs.get(PRUNED_VALUES_ATTR)
    else:
        values = [trial.intermediate_values[trial.last_step]] if trial.last_step is not None else None
    if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]
