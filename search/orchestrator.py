"""The study orchestrator: open the study, queue the work, run the trials."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from hpsearch.search.checkpoint_owner import CheckpointPlaces
from hpsearch.search.convergence import ConvergenceStop
from hpsearch.search.halving import end_at_what_ran, halving_trials_left, is_halving, promote_waiting
from hpsearch.search.heartbeat import Heartbeat
from hpsearch.search.queue import FINISHED, StudyQueue
from hpsearch.search.queue_wait import wait_for_queue
from hpsearch.search.resolved import ResolvedSpec, steep_step_note
from hpsearch.search.sampler_wrapper import SeededPerTrial
from hpsearch.search.samplers import make_pruner, make_sampler
from hpsearch.search.signals import Preemption
from hpsearch.search.spec import StudySpec
from hpsearch.search.study_claim import claim_study
from hpsearch.storage.attributes import (
    FAIL_REASON_ATTR,
    UID_ATTR,
)
from hpsearch.storage.database import StudyDatabase
from hpsearch.storage.errors import DiskFullError
from hpsearch.storage.optuna_seam import QueueEmpty, has_waiting_trial, taking_queued_trials_at_once
from hpsearch.storage.recorder import DatabaseRecorder
from hpsearch.storage.retry import DEFAULT_DB_TIMEOUT_S, DatabaseRetry
from hpsearch.storage.urls import is_proxy_url, resolve_storage_url, sqlite_path

# Heartbeat lives in search.heartbeat (the parsers import it without Optuna); it is re-exported here.
__all__ = ["FINISHED", "Heartbeat", "Orchestrator", "SearchOutcome", "open_database"]

@dataclass(frozen=True)
class SearchOutcome:
    """What one run of the trial loop did."""

    study: optuna.Study
    storage_url: str
    trials_run: int
    trials_failed: int
    converged: bool = False  # --stop-when-converged ended the loop
    preempted: int = 0  # trials handed back to the queue by a stop request (not counted as failed)
    idle: bool = False  # the study's work had all run already: nothing was started ("nothing to do")


def open_database(
    url: str,
    heartbeat: Heartbeat | None = None,
    echo: Callable[[str], None] | None = None,
    wait: bool = False,
    create: bool = True,
    **storage: Any,
) -> StudyDatabase:
    """The study database at ``url``, opened for search (``StudyDatabase.open_for_search``).

    With ``heartbeat``, trials of a killed worker are failed after the grace period and queued
    again, keeping their intermediate values so the retry can resume from the checkpoint, and
    the storage's calls ride out outages of up to ``heartbeat.db_timeout`` seconds, saying so
    through ``echo`` when one begins and ends. With ``wait`` (a worker: a scheduler may start it
    while the server restarts), opening rides out a transient outage too, and only a database
    that stays away past the timeout stops it (a final ``DatabaseUnavailable``, exit 1). Without
    ``create``, a SQLite file that does not exist is an error, not a new database. ``storage``
    goes to ``StudyDatabase.open_for_search`` (``storage_class``: the storage proxy's).
    """
    retry = DatabaseRetry(url, heartbeat.db_timeout if heartbeat else DEFAULT_DB_TIMEOUT_S, on_outage=echo, on_recovery=echo)
    options: dict = {}
    if heartbeat is not None:
        options = {
            "on_stale": echo,
            "heartbeat_interval": heartbeat.interval,
            "grace_period": heartbeat.grace_period,
            "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(
                max_retry=heartbeat.max_retry, inherit_intermediate_values=True
            ),
        }
    return StudyDatabase.open_for_search(url, retry=retry, wait=wait, create=create, **storage, **options)


def _make_folders(path: Path) -> list[Path]:
    """Make ``path`` and its missing parents; return the folders made, deepest first."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    path.mkdir(parents=True, exist_ok=True)
    return missing


def silent(line: str) -> None:
    """An ``echo`` that shows nothing (``--quiet``, ``search(verbose=False)``)."""
    del line


class Orchestrator:
    """Creates or loads the study for a ``ResolvedSpec`` and runs its trials."""

    def __init__(
        self,
        resolved: ResolvedSpec,
        echo: Callable[[str], None] = tqdm.write,
        progress: bool = True,
        heartbeat: Heartbeat = Heartbeat(),
        database: StudyDatabase | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.resolved = resolved
        self.spec: StudySpec = resolved.spec
        self.storage_url = resolve_storage_url(self.spec.storage, self.spec.output_dir)
        self.echo = echo
        # What may be a mistake (a twin study, a folder taken over) is said even where echo is silenced.
        self.warn = warn or echo
        self.progress = progress
        self.heartbeat = heartbeat
        # Opened by open() unless given (a worker opens it first, to read the stored spec).
        self.database = database
        self.queue = StudyQueue(resolved.sweep, resolved.train_config.seed)

    @property
    def is_grid(self) -> bool:
        return self.resolved.sampler == "grid"

    def open(self) -> optuna.Study:
        """Create the study, or load it if it holds the same search.

        Under the study's queue lock, so that commands starting at once on one study create it
        once and store its search once, and a refused study is not written to.
        """
        database = self._database()
        resolved = self.resolved
        # Each trial's draws come from the seed and its number, not from one stream per process:
        # several workers' streams would draw alike, and a worker's trials would differ from a
        # plain run's; a re-run's new trials, numbered on, draw anew.
        seed = resolved.train_config.seed
        sampler = SeededPerTrial(make_sampler(resolved.sampler, seed), seed)
        # Optuna's pruners refuse multi-objective studies; the divergence guard still applies.
        pruner = make_pruner(
            "none" if resolved.multi_objective else resolved.pruner, resolved.train_config.epochs,
            resolved.train_config.warmup_epochs, grid_points=resolved.grid_points,
        )
        places = self._checkpoint_places()
        if places is not None:
            # Outside the lock: an artifact store's outage would hold every other worker's open() there.
            places.refuse_taken(database.storage)
        with database.queue_lock(self.spec.name):
            try:
                study = optuna.create_study(study_name=self.spec.name, storage=database.storage, sampler=sampler,
                                            pruner=pruner, directions=resolved.directions, load_if_exists=True)
            except optuna.exceptions.DuplicatedStudyError:
                # Optuna versions that do not load on a lost race of creation raise this instead.
                study = optuna.load_study(study_name=self.spec.name, storage=database.storage, sampler=sampler, pruner=pruner)
            taking_queued_trials_at_once(study)
            claim_study(study, database.storage, resolved, self.warn)
            # A dead worker's trial is failed and its retry queued before anyone counts the queue:
            # left RUNNING, a grid would count its point as taken and stop at "nothing to do".
            optuna.storages.fail_stale_trials(study)
        return study

    def _checkpoint_places(self) -> CheckpointPlaces | None:
        return CheckpointPlaces.of(self.spec.name, self.spec.output_dir, self.resolved.train_config.checkpoints,
                                   self.spec.artifacts, self.storage_url)

    def _database(self) -> StudyDatabase:
        """The study database, opened (and the output directory made) on first use.

        A database that cannot be opened leaves no output directory behind: the folders made
        for it are removed again, if still empty.
        """
        if self.database is None:
            self._refuse_taken_places_before_creating()
        made = _make_folders(Path(self.spec.output_dir))
        if self.database is None:
            try:
                self.database = open_database(self.storage_url, self.heartbeat, self.echo)
            except BaseException:
                for folder in made:
                    with contextlib.suppress(OSError):
                        folder.rmdir()
                raise
        return self.database

    def _refuse_taken_places_before_creating(self) -> None:
        """Refuse another database's checkpoint folder before a new SQLite file is made for a study it cannot hold yet."""
        path = None if is_proxy_url(self.storage_url) else sqlite_path(self.storage_url)
        places = self._checkpoint_places()
        if path is not None and places is not None and not path.exists():
            places.refuse_taken(None)  # open() checks again, against what the database holds

    def create(self, n_trials: int | None) -> tuple[optuna.Study, int]:
        """Open the study and queue its work; return the study and how many trials are left to run.

        A grid queues a first batch of the points not yet finished, queued or running, and
        workers queue the next ones as they need them (``StudyQueue``). A sampled study queues
        what its budget of ``n_trials`` lacks. Both under the study's queue lock: commands that
        start at once queue the work once.
        """
        note = steep_step_note(self.resolved)
        if note is not None:
            self.warn(note)
        budget, points = self.resolved.n_trials, self.resolved.sweep.grid_size
        if self.is_grid and budget is not None and budget > points:  # a study file's n_trials, the sweep now a small grid
            self.warn(f"--n-trials {budget} is more than the grid's {points} points: each point runs once")
        with self._database().queue_lock(self.spec.name):
            study = self.open()
            if self.is_grid:
                waiting, unqueued = self.queue.queue_grid(study, n_trials, retry_failed=True)
                waiting += promote_waiting(study)
                left = waiting + unqueued
                return study, left if n_trials is None else min(left, n_trials)
            if self._converged(study):
                return study, self._waiting(study)  # converged: a re-run queues nothing more
            waiting, unqueued = self.queue.queue_budget(study, n_trials or 0, retry_interrupted=True)
            return study, waiting + unqueued

    def nothing_to_do(self, study: optuna.Study) -> str:
        """What a command says when the study has run all its work."""
        if self.is_grid:
            return f"Study {self.spec.name!r}: every grid point has already run; nothing to do."
        if self._converged(study):
            stop = self.spec.stop_when_converged
            return (f"Study {self.spec.name!r} has converged: its last {stop} complete trials did not improve the best "
                    f"(--stop-when-converged {stop}); nothing to do (without it, or with a larger N, the search goes on).")
        held = StudyQueue.budget_spent(study.get_trials(deepcopy=False))
        return (f"Study {self.spec.name!r}: its budget of {self.resolved.n_trials} trials (--n-trials, n_trials= in Python: "
                f"the trials it holds in all, not a count of new ones) is spent, with {held} trials; nothing to do (a "
                "larger budget adds trials).")

    def top_up(self, study: optuna.Study) -> bool:
        """Queue the next batch of the grid or of the budget, if any is left; True when a trial waits now.

        Workers that find the queue empty together take the queue lock in turn, and the first
        queues the next batch: a trial waiting now is taken from that batch, without reading the
        whole study again. Only a waiting trial counts: with many workers every take of the lock
        waits for another holder, and taking the wait alone for a top-up left the queue empty for
        good (32 workers idled on an empty queue with most of the budget left).
        """
        assert self.database is not None
        with self.database.queue_lock(self.spec.name) as waited:
            # A budget's batch needs no top-up while a trial waits; a grid's top-up also promotes
            # halving's points, so it goes on unless it waited for the holder. The check is one
            # statement (one request through the proxy), where the top-up reads every trial.
            if (waited or not self.is_grid) and has_waiting_trial(study):
                return True
            if self.is_grid:
                waiting, _ = self.queue.queue_grid(study)
                waiting += promote_waiting(study)
            elif self._converged(study):
                return False
            else:
                waiting, _ = self.queue.queue_budget(study, self.resolved.n_trials or 0)
        return waiting > 0

    def _converged(self, study: optuna.Study) -> bool:
        stop = self.spec.stop_when_converged
        return bool(stop) and ConvergenceStop(stop).study_converged(study)

    def run(self) -> SearchOutcome:
        """Create or resume the study and run its trials in this process.

        A trial still RUNNING (a killed worker's, inside its grace period) is waited for, and
        its retry run here, so ``planned`` grows by one for each.
        """
        study, planned = self.create(self.resolved.n_trials)
        running = self._running(study)
        if planned == 0 and running == 0:
            self.echo(self.nothing_to_do(study))
            return SearchOutcome(study, self.storage_url, 0, 0, converged=not self.is_grid and self._converged(study), idle=True)
        # Under halving, the points that go on past a rung are trials of their own, queued as the
        # rungs fill: the loop runs until nothing is left rather than counting.
        if is_halving(study.pruner):
            return self.work(study, None, expected=halving_trials_left(study))
        return self.work(study, planned + running)

    def work(
        self,
        study: optuna.Study,
        n_trials: int | None = None,
        on_trial_end: Callable[[], None] | None = None,
        preemption: Preemption | None = None,
        max_seconds: float | None = None,
        expected: int | None = None,
    ) -> SearchOutcome:
        """The worker loop: run queued trials until none waits or runs, or ``n_trials`` of them.

        ``expected``: the trials the progress bar counts to where ``n_trials`` does not bound the loop.

        Trials left RUNNING by a killed worker are failed and queued again first. With the queue
        empty, the loop waits while another worker's trial runs (``wait_for_queue``), and takes
        its heartbeat retry if that worker dies. After each trial, ``on_trial_end`` is called if
        given (and while waiting, so that it can follow other workers' trials), else this loop's
        own progress bar moves.

        A trial this worker abandons (its heartbeat could not be stored for too long) is waited
        for like a dead worker's; a database away past ``--db-timeout`` ends the loop with a final
        ``DatabaseUnavailable``, the running trial left to its heartbeat retry.

        With ``preemption``, a stop request ends the running trial at its next boundary (its retry
        queued at once, see ``Objective``) and starts no other. After ``max_seconds`` (from now,
        as the study's ``--timeout``) no trial starts; the running one finishes.
        """
        # Imported here: the objective imports torch, which hpsearch --help (it imports this module) must not wait for.
        from hpsearch.search.objective import Objective, TrialAbandoned
        from hpsearch.search.trial_attrs import worker_name

        assert self.database is not None, "open() the study first"  # open() has failed stale trials already
        storage = self.database.storage
        limits = [seconds for seconds in (self.spec.timeout, max_seconds) if seconds is not None]
        deadline = time.monotonic() + min(limits) if limits else None
        stop_requested = (lambda: preemption.requested) if preemption is not None else (lambda: False)
        # disable=None: a bar only where stderr is a terminal, not redrawn into a log file.
        bar = tqdm(total=n_trials if n_trials is not None else expected, desc=self.spec.name, unit="trial", disable=None if self.progress and on_trial_end is None else True)
        finished: list[TrialState] = []
        preempted: list[int] = []
        stop = ConvergenceStop(self.spec.stop_when_converged) if self.spec.stop_when_converged else None
        converged = False

        def check_converged() -> bool:
            # From the stored trials, not this worker's: every worker reaches the same answer.
            nonlocal converged
            if stop is not None and not converged and stop.study_converged(study):
                converged = True
                stop.record(study)
                self.echo(f"Study {study.study_name!r} converged: {stop.patience} complete trials in a row did not "
                          f"improve the best (stop_when_converged={stop.patience}); no more trials start.")
            return converged

        def after_trial(_study: optuna.Study, trial: FrozenTrial) -> None:
            if trial.state == TrialState.FAIL and trial.user_attrs.get(FAIL_REASON_ATTR, "").startswith("preempted "):
                preempted.append(trial.number)
            else:
                finished.append(trial.state)
            if on_trial_end is not None:
                on_trial_end()
            else:
                bar.update(1)
            if stop_requested() or check_converged():
                study.stop()

        recorder = DatabaseRecorder(storage, self.database.epoch_table)
        objective = Objective(self.resolved, recorder, self.echo, preemption)
        places = self._checkpoint_places()
        for note in places.claim(study.user_attrs[UID_ATTR], objective.archive) if places is not None else ():
            self.warn(note)
        storage.queue_only = True
        storage.worker_name = worker_name(self.resolved.train_config.device)
        try:
            while True:
                left = None if n_trials is None else n_trials - len(finished)
                if (left is not None and left <= 0) or stop_requested() or check_converged():
                    break
                try:
                    # study.optimize, not our own loop: it runs the heartbeat thread of each trial.
                    study.optimize(
                        objective,
                        n_trials=left,
                        timeout=None if deadline is None else max(deadline - time.monotonic(), 0.0),
                        catch=(Exception,),
                        callbacks=[after_trial],
                    )
                    break  # n_trials run, or the timeout reached
                except QueueEmpty:
                    # The queue is empty; past it a grid would repeat a point, a budget would overrun.
                    if self.top_up(study):
                        continue
                except TrialAbandoned as abandoned:
                    if abandoned.handed_back:
                        self._fail_handed_back(study, abandoned.number)
                    elif not isinstance(abandoned.error, DiskFullError):  # whose one line says where the trial is
                        self.echo(f"Trial {abandoned.number}: left to its heartbeat retry: {abandoned.reason}")
                    if abandoned.error is not None:
                        raise abandoned.error from None
                    # The wait below fails it once its heartbeat is stale, and queues its retry.
                # The last trial of a halving rung may have just ended on another worker, its
                # promotions not yet queued: queue them here rather than leave.
                if not wait_for_queue(study, deadline, on_trial_end, stop_requested) and (
                    stop_requested() or not is_halving(study.pruner) or not self.top_up(study)
                ):
                    break
            if expected is not None:
                end_at_what_ran(bar)
        finally:
            storage.queue_only = False
            bar.close()
        return SearchOutcome(
            study, self.storage_url, len(finished), finished.count(TrialState.FAIL), converged, len(preempted)
        )

    @staticmethod
    def _fail_handed_back(study: optuna.Study, number: int) -> None:
        """Tell FAIL a trial whose retry is queued; one that cannot be told goes stale, and is not queued twice."""
        try:
            study.tell(number, state=TrialState.FAIL)
        except DiskFullError:
            pass

    @staticmethod
    def _waiting(study: optuna.Study) -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    @staticmethod
    def _running(study: optuna.Study) -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
