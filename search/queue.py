"""A study's queue: its grid's points in batches, or its sampler's budget, each queued once."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.search.sweep import SeededOrder, Sweep
from hpsearch.storage.attributes import FAIL_REASON_ATTR, RETRY_OF_ATTR
from hpsearch.storage.optuna_seam import enqueue_points

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def point_key(point: dict[str, Any]) -> Hashable:
    """A grid point as a set member: its items, sorted (1 and 1.0 are one value, as in ``==``)."""
    return tuple(sorted(point.items()))


def enqueued_point(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters ``trial`` was queued with (Optuna's ``enqueue_trial``): a grid point, a retry's; none for a sampled trial."""
    return trial.system_attrs.get("fixed_params", {})


def trial_point(trial: FrozenTrial) -> dict[str, Any]:
    """The grid point a trial runs: an enqueued point's fixed parameters, also while its worker has
    taken it but not yet suggested them as parameters, and its parameters (a heartbeat retry has only those)."""
    return {**enqueued_point(trial), **trial.params}


class StudyQueue:
    """What a study has left to run, put in its queue: each call runs under the study's queue lock.

    A grid is queued lazily, a batch of points at a time (``batch``) in a seeded random order, and topped up
    when a worker finds the queue empty: the first trial starts as soon on a grid of 10^6 points
    as on one of 4, and the study holds only the points queued so far. Which points are taken is
    a set of the study's trials' parameters, so a batch costs the study's trials, not its grid.
    A sampled study's ``n_trials`` is its budget: the trials it holds in all, so any number of
    commands that queue it, at once or one after another, queue it once; it is queued in batches
    too.
    """

    BATCH = 8

    def __init__(self, sweep: Sweep, seed: int) -> None:
        self.sweep, self.seed = sweep, seed
        self._order: SeededOrder | None = None
        # Positions of the order before this one are all queued (by any process): the next batch
        # starts here instead of walking the whole order again.
        self._next_position = 0

    @property
    def order(self) -> SeededOrder:
        """The grid's indices in the seeded order the points are queued in (made on first use)."""
        if self._order is None:
            self._order = SeededOrder(self.sweep.grid_size, self.seed)
        return self._order

    def queue_grid(self, study: optuna.Study, limit: int | None = None, retry_failed: bool = False) -> tuple[int, int]:
        """Top the queue up to a batch of grid points; return how many wait and how many are not queued yet.

        ``limit`` caps what waits (``--n-trials``). With ``retry_failed`` (a command that starts
        the study again), each point whose trials failed (stopped by a signal, or by an error) is
        queued again first, with the user attribute ``retry_of``, those trials' numbers, so that
        its new trial resumes from their last checkpoint; a worker's top-up leaves them to such
        a command, so that a point that always fails is not retried for ever.
        """
        taken: set[Hashable] = set()
        failed: dict[Hashable, tuple[dict[str, Any], list[int]]] = {}
        waiting = running = 0
        for trial in study.get_trials(deepcopy=False):
            point = trial_point(trial)
            if trial.state == TrialState.WAITING:
                waiting += 1
                taken.add(point_key(point))
            elif trial.state in (*FINISHED, TrialState.RUNNING):
                running += trial.state == TrialState.RUNNING
                taken.add(point_key(point))
            elif trial.state == TrialState.FAIL:
                failed.setdefault(point_key(point), (point, []))[1].append(trial.number)
        if retry_failed:
            for key, (point, numbers) in failed.items():
                if key not in taken and self.sweep.grid_index(point) is not None:
                    study.enqueue_trial(point, user_attrs={RETRY_OF_ATTR: numbers})
                    taken.add(key)
                    waiting += 1
        wanted = self.batch(running) if limit is None else min(self.batch(running), limit)
        order, position = self.order, self._next_position
        batch = []
        while waiting < wanted and position < len(order):
            point = self.sweep.grid_point(order[position])
            key = point_key(point)
            position += 1
            if key in taken or key in failed:
                continue
            batch.append(point)
            taken.add(key)
            waiting += 1
        enqueue_points(study, batch)
        self._next_position = position
        done = {index for index in (self.sweep.grid_index(dict(key)) for key in taken | set(failed)) if index is not None}
        return waiting, len(order) - len(done)

    @staticmethod
    def batch(running: int) -> int:
        """How many trials a top-up leaves waiting: ``BATCH``, or one more than the trials running, whichever is more.

        Few enough that reading the queue stays cheap (Optuna reads every unfinished trial again
        at each pruning decision and each take), and enough that many workers seldom find it empty.
        """
        return max(StudyQueue.BATCH, running + 1)

    @staticmethod
    def queue_budget(study: optuna.Study, n_trials: int, retry_interrupted: bool = False) -> tuple[int, int]:
        """Top the queue up to a batch of the study's budget of ``n_trials`` trials; return how many wait and how many are not queued yet.

        The trials are parameterless: the sampler fills each in when a worker takes it, and Optuna
        hands each WAITING trial to exactly one worker. They are queued a batch at a time
        (``batch``) and topped up when a worker finds the queue empty: a budget queued whole
        would cost each trial in proportion to it, and a budget of 10^6 would take minutes to
        queue. With ``retry_interrupted`` (a command that starts the study again), each sampled
        trial a signal stopped is queued again first, with its parameters; a worker's top-up
        leaves them to such a command, as a grid's leaves its failed points.
        """
        if retry_interrupted:
            StudyQueue._queue_interrupted(study)
        trials = study.get_trials(deepcopy=False)
        lacking = StudyQueue.budget_left(trials, n_trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        added = min(lacking, max(StudyQueue.batch(running) - waiting, 0))
        enqueue_points(study, [{}] * added)
        return waiting + added, lacking - added

    @staticmethod
    def budget_left(trials: Sequence[FrozenTrial], n_trials: int) -> int:
        """Trials of a budget of ``n_trials`` not yet queued (``budget_spent``)."""
        return max(n_trials - StudyQueue.budget_spent(trials), 0)

    @staticmethod
    def budget_spent(trials: Sequence[FrozenTrial]) -> int:
        """The trials a budget counts: a failed trial that a retry took over is not counted; every other trial is."""
        replaced = {number for trial in trials for number in _replaces(trial)}
        return sum(not (t.state == TrialState.FAIL and t.number in replaced) for t in trials)

    @staticmethod
    def _queue_interrupted(study: optuna.Study) -> int:
        """Queue again, with its parameters, each sampled trial a signal stopped; return how many.

        The retry carries ``retry_of`` and resumes from the stopped trial's checkpoint, as a grid
        point's does, so Ctrl-C loses no more than ``kill -9`` (whose heartbeat retry resumes).
        A trial already retried is not queued again.
        """
        trials = study.get_trials(deepcopy=False)
        retried = {number for trial in trials for number in trial.user_attrs.get(RETRY_OF_ATTR, [])}
        queued = 0
        for trial in trials:
            stopped = trial.state == TrialState.FAIL and trial.user_attrs.get(FAIL_REASON_ATTR, "").startswith("interrupted by ")
            if stopped and trial.params and trial.number not in retried:
                study.enqueue_trial(trial.params, user_attrs={RETRY_OF_ATTR: [trial.number]})
                queued += 1
        return queued


def _replaces(trial: FrozenTrial) -> list[int]:
    """The failed trials ``trial`` took over: a signal's retry (``retry_of``) or Optuna's heartbeat retry."""
    failed = trial.system_attrs.get("failed_trial")
    return [*trial.user_attrs.get(RETRY_OF_ATTR, []), *([] if failed is None else [failed])]
