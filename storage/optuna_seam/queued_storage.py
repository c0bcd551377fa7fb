"""``QueuedRDBStorage``: Optuna's ``RDBStorage`` with the take of a queued trial, batched writes
and Core SQL reads (2 to 4 and 9 of the package's docstring).

One class past 400 lines: each of its methods is one that Optuna's cache or hpsearch calls on
the storage, kept beside the transaction rules they share.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Container, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models as optuna_models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

from hpsearch.storage.attributes import EPOCHS_RUN_ATTR, FAIL_REASON_ATTR, RETRY_OF_ATTR, WORKER_ATTR
from hpsearch.storage.optuna_seam.frozen_trials import read_trials
from hpsearch.storage.optuna_seam.tables import (
    HEARTBEATS_TYPED,
    STUDIES,
    TRIAL_HEARTBEATS,
    TRIAL_PARAMS,
    TRIAL_SYSTEM_ATTRIBUTES,
    TRIALS_TYPED,
    stored_now,
)
from hpsearch.storage.optuna_seam.trial import ParamBatches, trial_id
from hpsearch.storage.retry import DatabaseRetry, HeartbeatLedger, retried_method


# --- 2 to 4. The storage: the take of a queued trial, batched user attributes, queue-only. -------
class QueueEmpty(Exception):
    """A worker asked for a trial while ``queue_only`` was set and no trial was waiting."""


# The system attribute that names one creation of a trial, so that a retried creation whose first
# attempt did commit finds that trial instead of adding a second.
WRITE_ID_ATTR = "hpsearch:write_id"
# The write id a proxy client sends with a queued trial's template; the proxy stores it as WRITE_ID_ATTR.
SENT_WRITE_ID_ATTR = "hpsearch:proxy:write_id"
# The grace period the worker running a trial declared (its --grace-period, whole seconds), stored with
# the take behind the storage proxy: every proxy process, a restarted one too, judges the trial by it.
GRACE_ATTR = "hpsearch:grace"
# The id of the proxy request that took the trial: a client repeating a take whose answer it lost gets
# the same trial from any proxy process, a restarted one too.
TAKE_ID_ATTR = "hpsearch:take_id"

# Storage methods that Optuna's cached storage and hpsearch call, each retried through transient
# errors as it is (they are idempotent: reads, and upserts keyed by trial and name). The others
# that write are overridden below with what makes their retry exact.
# The public ones are every storage's (the proxy's client retries the same).
RETRIED_STORAGE_METHODS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "set_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
)
_RETRIED_AS_THEY_ARE = (
    *RETRIED_STORAGE_METHODS,
    "_get_trials",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
    "_set_trial_param",
)


def _replace_attrs(connection: sa.Connection, table: sa.Table, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Set trial attributes in ``table`` (user or system attributes) within ``connection``'s transaction."""
    if attrs:
        connection.execute(sa.delete(table).where(table.c.trial_id == trial_id, table.c.key.in_(list(attrs))))
        connection.execute(sa.insert(table), [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()])


def _stored_distributions(study_id: int, names: Sequence[str]) -> sa.Select:
    """One row: for each name, the distribution JSON a trial of the study stored under it, or NULL.

    As Optuna checks a new parameter against: any one will do, since each was checked against
    those stored before it. One round trip for a trial's parameters instead of one each.
    """
    trials, params = TRIALS_TYPED, TRIAL_PARAMS
    return sa.select(*(
        sa.select(params.c.distribution_json)
        .join_from(params, trials, trials.c.trial_id == params.c.trial_id)
        .where(trials.c.study_id == study_id, params.c.param_name == name)
        .limit(1)
        .scalar_subquery()
        for name in names
    ))


class QueuedRDBStorage(optuna.storages.RDBStorage):
    """``RDBStorage`` that rides out database outages and hands each WAITING trial to exactly one worker.

    Every call goes through ``retry`` (a ``DatabaseRetry``): a transient error (a dropped
    connection, a restarting server, a locked SQLite file) is retried until the database has been
    away for ``retry.timeout`` seconds. Retried writes are applied once: reads and upserts are
    idempotent as they are; a trial's take, its final state and the creation of a queued trial
    recognise an earlier attempt that committed before its answer was lost.

    Optuna takes a queued trial by reading its state and then writing RUNNING; SQLite ignores
    ``SELECT ... FOR UPDATE``, so two workers could both take it. Here the take is one
    conditional ``UPDATE``, atomic on SQLite and PostgreSQL alike, and it writes the trial's
    first heartbeat in the same transaction: a worker killed before its heartbeat thread began
    still leaves a trial that goes stale.

    The heartbeat never raises: a failed beat is retried for one interval, then the next beat
    tries again, and ``heartbeat_age`` tells the trainer how long the trial has gone without one.
    A trial failed because its heartbeat went stale gets a ``fail_reason``, and ``on_stale`` a
    line saying so, before Optuna's stale-trial callback queues its retry.

    With ``queue_only`` set, ``Study.ask`` either takes a WAITING trial or raises
    ``QueueEmpty``; it never starts a fresh one. Queued trials and heartbeat retries are
    created from a template and are always allowed.
    """

    queue_only: bool = False
    # The ``worker`` attribute a take writes (``host:pid:device``), so that a trial whose worker
    # dies says whose it was; None: the take writes none (the proxy's, whose client sends its own).
    worker_name: str | None = None

    def __init__(
        self, url: str, retry: DatabaseRetry | None = None, on_stale: Callable[[str], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(url, **kwargs)
        self.on_stale = on_stale
        self.retry = retry if retry is not None else DatabaseRetry(url)
        # A session whose connection broke is dropped before the next attempt.
        self.retry.before_retry = self.remove_session
        self.heartbeats = HeartbeatLedger()
        self.heartbeat_errors = self.heartbeats.errors
        self.param_batches = ParamBatches()

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        if state == TrialState.RUNNING and values is None:
            return self.retry.call(self._take, trial_id, stored_now(), [])
        parent = super().set_trial_state_values
        attempts: list[int] = []

        def finish() -> bool:
            attempts.append(1)
            try:
                return parent(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # An earlier attempt committed, and only its answer was lost.
                if len(attempts) > 1 and self._finished_as(trial_id, state, values):
                    return True
                raise

        return self.retry.call(finish)

    def _finished_as(self, trial_id: int, state: TrialState, values: Sequence[float] | None) -> bool:
        trial = super().get_trial(trial_id)
        return trial.state == state and (values is None or list(trial.values or []) == list(values))

    def _take(self, trial_id: int, start: datetime, attempts: list[int]) -> bool:
        """Move a WAITING trial to RUNNING with its first heartbeat; True for the worker that took it.

        A trial another worker is taking at this moment is not waited for: ``FOR UPDATE SKIP
        LOCKED`` (PostgreSQL; SQLite takes one writer at a time) passes over its locked row, and
        ``Study.ask`` moves on to the next WAITING trial. Workers all try the queue in the same
        order, so waiting for each peer's commit made the take the longest wait of a trial at 32
        workers.
        """
        trials = TRIALS_TYPED
        with self.engine.begin() as connection:
            current = None
            if attempts:  # only a retry can find that an earlier attempt committed
                current = connection.execute(
                    sa.select(trials.c.state, trials.c.datetime_start).where(trials.c.trial_id == trial_id)
                ).one_or_none()
            attempts.append(1)
            if current is not None and current.state == TrialState.RUNNING and current.datetime_start == start:
                taken = True  # an earlier attempt of this take committed
            else:
                free = (
                    sa.select(trials.c.trial_id)
                    .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
                    .with_for_update(skip_locked=True)
                )
                take = (
                    sa.update(trials)
                    .where(trials.c.trial_id.in_(free))
                    .values(state=TrialState.RUNNING, datetime_start=start)
                )
                taken = connection.execute(take).rowcount == 1
                if taken:
                    self._write_taken(connection, trial_id, self.worker_name)
        if taken:
            self.heartbeats.stored(trial_id)
        return taken

    def take_waiting_trial(
        self, study_id: int, worker_name: str | None = None, grace: int | None = None, take_id: str | None = None
    ) -> int | None:
        """Take the study's first WAITING trial (by number) as ``_take`` takes one: its id, or None when none waits.

        One ``UPDATE`` of the first row no other worker is taking (``SKIP LOCKED``), where
        ``Study.ask`` reads every WAITING trial and tries each in turn (11 of the package's docstring). The take
        names ``worker_name``, or this storage's ``worker_name`` (the proxy takes for its clients).
        The proxy also stores the taking worker's ``grace`` and its request's ``take_id``
        (``GRACE_ATTR``, ``TAKE_ID_ATTR``), when given.
        """
        system_attrs = {k: v for k, v in ((GRACE_ATTR, grace), (TAKE_ID_ATTR, take_id)) if v is not None}
        return self.retry.call(self._take_first, study_id, stored_now(), worker_name or self.worker_name, system_attrs, [])

    def taken_by(self, study_id: int, take_id: str) -> int | None:
        """The trial of study ``study_id`` that the take ``take_id`` took, if one did."""
        attrs, trials = optuna_models.TrialSystemAttributeModel.__table__, TRIALS_TYPED
        query = (
            sa.select(attrs.c.trial_id)
            .join(trials, trials.c.trial_id == attrs.c.trial_id)
            .where(trials.c.study_id == study_id, attrs.c.key == TAKE_ID_ATTR, attrs.c.value_json == json.dumps(take_id))
        )

        def read() -> int | None:
            with self.engine.connect() as connection:
                return connection.execute(query).scalar()

        return self.retry.call(read)

    def _take_first(
        self, study_id: int, start: datetime, worker_name: str | None, system_attrs: Mapping[str, Any], attempts: list[int]
    ) -> int | None:
        trials = TRIALS_TYPED
        with self.engine.begin() as connection:
            taken = None
            if attempts:  # only a retry can find that an earlier attempt committed
                taken = connection.execute(
                    sa.select(trials.c.trial_id)
                    .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING, trials.c.datetime_start == start)
                ).scalar()
            attempts.append(1)
            if taken is None:
                first = (
                    sa.select(trials.c.trial_id)
                    .where(trials.c.study_id == study_id, trials.c.state == TrialState.WAITING)
                    .order_by(trials.c.number)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                    .scalar_subquery()
                )
                # One statement, so SQLite takes its write lock at once (a read first could not upgrade).
                take = (
                    sa.update(trials)
                    .where(trials.c.trial_id == first, trials.c.state == TrialState.WAITING)
                    .values(state=TrialState.RUNNING, datetime_start=start)
                    .returning(trials.c.trial_id)
                )
                taken = connection.execute(take).scalar()
                if taken is None:
                    return None
                self._write_taken(connection, taken, worker_name, system_attrs)
        self.heartbeats.stored(taken)
        return taken

    def _write_taken(
        self, connection: sa.Connection, trial_id: int, worker_name: str | None, system_attrs: Mapping[str, Any] | None = None
    ) -> None:
        """In a take's transaction: the trial's first heartbeat, the name of the worker that took it, and ``system_attrs``."""
        if self.heartbeat_interval is not None:
            connection.execute(sa.insert(TRIAL_HEARTBEATS).values(trial_id=trial_id, heartbeat=sa.func.current_timestamp()))
        # A heartbeat retry inherits its failed trial's attributes, the dead worker's name and grace among them.
        if worker_name is not None:
            _replace_attrs(connection, optuna_models.TrialUserAttributeModel.__table__, trial_id, {WORKER_ATTR: worker_name})
        _replace_attrs(connection, optuna_models.TrialSystemAttributeModel.__table__, trial_id, system_attrs or {})

    def store_grace(self, trial_id: int, grace: int) -> None:
        """Store ``grace`` as the trial's ``GRACE_ATTR``, whatever its state (a finished trial is judged no more)."""

        def store() -> None:
            with self.engine.begin() as connection:
                _replace_attrs(connection, optuna_models.TrialSystemAttributeModel.__table__, trial_id, {GRACE_ATTR: grace})

        self.retry.call(store)

    def record_heartbeat(self, trial_id: int) -> None:
        """Optuna's heartbeat, retried for one interval; it never raises, so its thread never dies.

        Optuna's heartbeat thread stops for good at the first exception, and the trial then
        goes stale while it trains. A beat that fails is recorded in ``heartbeat_errors``;
        one right after the take, which stored the first, is skipped (``HeartbeatLedger.beat``).
        """
        store = super().record_heartbeat
        self.heartbeats.beat(trial_id, self.retry, float(self.heartbeat_interval or 1), lambda: store(trial_id))

    def heartbeat_age(self, trial_id: int) -> float:
        """Seconds since this process last stored a heartbeat of ``trial_id`` (0 if it never took it)."""
        return self.heartbeats.age(trial_id)

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any], beat: bool = False) -> None:
        """Set several user attributes of a running trial in one transaction.

        ``Trial.set_user_attr`` runs a lookup, an upsert and a commit per key; a trial's closing
        attributes are about 15 keys, and on SQLite each commit holds the write lock that other
        workers wait on. Values are stored as ``set_user_attr`` stores them (JSON).

        With ``beat``, the trial's heartbeat is stored in the same transaction, which checks that
        the trial still runs: a worker's closing write then also says that it still owns the trial,
        and no peer judges it stale for a grace period.
        """
        beat = beat and self.heartbeat_interval is not None
        self.retry.call(self._set_trial_user_attrs, trial_id, attrs, False, beat)
        if beat:
            self.heartbeats.stored(trial_id)

    def _set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any], finished: bool = False, beat: bool = False) -> None:
        table = optuna_models.TrialUserAttributeModel.__table__
        rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
        with _create_scoped_session(self.scoped_session, True) as session:
            trial = optuna_models.TrialModel.find_or_raise_by_id(trial_id, session)
            if not finished:
                self.check_trial_is_updatable(trial_id, trial.state)
            # Delete-then-insert is an upsert every dialect runs the same way.
            session.execute(sa.delete(table).where(table.c.trial_id == trial_id, table.c.key.in_(list(attrs))))
            session.execute(sa.insert(table), rows)
            if beat:
                now = sa.func.current_timestamp()
                beats = TRIAL_HEARTBEATS
                if session.execute(sa.update(beats).where(beats.c.trial_id == trial_id).values(heartbeat=now)).rowcount == 0:
                    session.execute(sa.insert(beats).values(trial_id=trial_id, heartbeat=now))

    def write_with_report(
        self, statement: sa.Executable, rows: Sequence[Mapping[str, Any]], trial_id: int, step: int, value: float
    ) -> None:
        """Execute ``statement`` with ``rows`` (an epoch row's upsert) and store the report of ``value`` at ``step``, in one transaction.

        One commit per epoch instead of two, and never a row without its report. Once the trial
        has ended, ``UpdateFinishedTrialError`` and nothing written. Not retried here: the caller
        retries the pair (the upsert and Optuna's report are idempotent).
        """
        with _create_scoped_session(self.scoped_session, True) as session:
            # The report first: Optuna's refusal of an ended trial reads it in a session that
            # commits, which would commit a row written before it.
            self._set_trial_intermediate_value_without_commit(session, trial_id, step, value)
            session.execute(statement, list(rows))

    def create_waiting_trials(self, study_id: int, points: Sequence[Mapping[str, Any]], write_id: str | None = None) -> None:
        """Queue a WAITING trial for each point, in one transaction: what ``study.enqueue_trial(point)`` makes of each.

        Each ``enqueue_trial`` is a transaction of its own of about eight statements, which a
        budget of trials or a grid's batch paid per trial. A retry after a lost answer finds the
        batch by its write id and queues nothing more; a caller that retries the whole call (the
        storage proxy's client) passes the same ``write_id`` each time.
        """
        checked = write_id is not None  # the caller's retry may follow an attempt that committed
        write_id = write_id or uuid.uuid4().hex
        attempts: list[int] = []

        def create() -> None:
            if (attempts or checked) and self._trial_written_as(write_id) is not None:
                return  # an earlier attempt committed, and only its answer was lost
            attempts.append(1)
            self._insert_waiting_trials(study_id, points, write_id)

        if points:
            self.retry.call(create)

    def _insert_waiting_trials(self, study_id: int, points: Sequence[Mapping[str, Any]], write_id: str) -> None:
        # Three statements a batch, not three a trial: the batch is written under the queue lock,
        # which every worker that finds the queue empty waits for.
        trials, attrs = TRIALS_TYPED, TRIAL_SYSTEM_ATTRIBUTES
        with self.engine.begin() as connection:
            rows = [{"study_id": study_id, "state": TrialState.WAITING} for _ in points]
            if connection.dialect.insert_executemany_returning_sort_by_parameter_order:
                table = optuna_models.TrialModel.__table__  # a Table: what sorts the returned ids by row
                returned = connection.execute(
                    sa.insert(table).returning(table.c.trial_id, sort_by_parameter_order=True), rows
                )
                new_ids = list(returned.scalars())
            else:  # SQLite before 3.35
                new_ids = [connection.execute(sa.insert(trials), row).lastrowid for row in rows]
            # Numbered as Optuna numbers a trial: by the study's trials with a smaller id.
            past = trials.alias("past")
            earlier = sa.select(sa.func.count()).where(past.c.study_id == study_id, past.c.trial_id < trials.c.trial_id)
            connection.execute(sa.update(trials).where(trials.c.trial_id.in_(new_ids)).values(number=earlier.scalar_subquery()))
            fixed = [{"trial_id": new_id, "key": "fixed_params", "value_json": json.dumps(dict(point))} for new_id, point in zip(new_ids, points)]
            # The batch commits whole, so its first trial names it.
            fixed.append({"trial_id": new_ids[0], "key": WRITE_ID_ATTR, "value_json": json.dumps(write_id)})
            connection.execute(sa.insert(attrs), fixed)

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        """Optuna's stale-trial callback (the retry), after the failed trial is told why.

        A killed worker's trial otherwise ends FAIL with nothing on it. Its ``fail_reason`` and
        ``epochs_run`` are written although the trial has finished, which Optuna's API refuses; a
        reason the worker stored itself (an abandoned trial's) is kept. A trial whose retry a preempted worker
        already queued is not queued again.
        """
        queue_retry = super().get_heartbeat_stale_trial_callback()

        def fail_stale(study: optuna.Study, trial: FrozenTrial) -> None:
            # A preempted worker queues its trial's retry (``retry_of``) before the trial is told
            # FAIL; killed in between, the trial goes stale with its retry already queued.
            queued = any(trial.number in t.user_attrs.get(RETRY_OF_ATTR, ()) for t in study.get_trials(deepcopy=False))
            if queue_retry is not None and not queued:
                queue_retry(study, trial)
            closing: dict[str, Any] = {}
            reason = trial.user_attrs.get(FAIL_REASON_ATTR)
            if reason is None:
                grace = self.grace_period or 2 * (self.heartbeat_interval or 0)  # Optuna's default grace
                worker = trial.user_attrs.get(WORKER_ATTR)
                whose = f"its worker ({worker})" if worker else "its worker"
                reason = f"no heartbeat for over {grace} s: {whose} was killed or lost the database"
                closing[FAIL_REASON_ATTR] = reason
            if EPOCHS_RUN_ATTR not in trial.user_attrs and len(study.directions) == 1:
                closing[EPOCHS_RUN_ATTR] = len(trial.intermediate_values)  # one report per epoch it stored
            if closing:
                self.retry.call(self._set_trial_user_attrs, trial_id(trial), closing, True)
            if self.on_stale is not None:
                again = "queued again to resume from its checkpoint, if it saved one" if queue_retry is not None else "not retried"
                self.on_stale(f"Trial {trial.number} failed: {reason}; {again}")

        return fail_stale

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        if self.queue_only and template_trial is None:
            raise QueueEmpty("no trial is waiting in the queue")
        parent = super()._create_new_trial
        if template_trial is None:
            return self.retry.call(parent, study_id, None)
        # A proxy client names its create, and may have sent it before and lost the answer: the
        # trial may exist already. (A stored write id is not that: a heartbeat retry inherits its
        # failed trial's system attributes, write id included.)
        attrs = dict(template_trial.system_attrs)
        sent = attrs.pop(SENT_WRITE_ID_ATTR, None)
        write_id = sent or uuid.uuid4().hex
        template = copy.copy(template_trial)
        template.system_attrs = {**attrs, WRITE_ID_ATTR: write_id}
        attempts: list[int] = [1] if sent else []

        def create() -> FrozenTrial:
            if attempts:
                earlier = self._trial_written_as(write_id)
                if earlier is not None:
                    return super(QueuedRDBStorage, self).get_trial(earlier)
            attempts.append(1)
            return parent(study_id, template)

        return self.retry.call(create)

    def _trial_written_as(self, write_id: str) -> int | None:
        attrs = TRIAL_SYSTEM_ATTRIBUTES
        query = sa.select(attrs.c.trial_id).where(attrs.c.key == WRITE_ID_ATTR, attrs.c.value_json == json.dumps(write_id))
        with self.engine.connect() as connection:
            return connection.execute(query).scalar()

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: optuna.distributions.BaseDistribution,
        previous_distribution: optuna.distributions.BaseDistribution | None,
    ) -> None:
        """``RDBStorage._set_trial_param`` (each ``suggest_*``) in Core statements, not the ORM's lookups and flush; retried.

        Within ``params_in_one_request``, held back and stored with the trial's others at the block's end.
        """
        param = (param_name, param_value_internal, distribution, previous_distribution)
        if not self.param_batches.hold(trial_id, param):
            self.retry.call(self._store_params, trial_id, [param])

    def params_batched(self, trial_id: int) -> AbstractContextManager[None]:
        """The trial's parameters set within the block, stored in one transaction at its end (``params_in_one_request``)."""
        return self.param_batches.batch(trial_id, lambda pending: self.retry.call(self._store_params, trial_id, pending))

    def set_trial_params(self, trial_id: int, params: Sequence[tuple[str, float, optuna.distributions.BaseDistribution]]) -> None:
        """``set_trial_param`` of each (name, internal value, distribution), in one transaction; retried."""
        self.retry.call(self._store_params, trial_id, [(*param, None) for param in params])

    def _store_params(
        self,
        trial_id: int,
        params_with_previous: Sequence[
            tuple[str, float, optuna.distributions.BaseDistribution, optuna.distributions.BaseDistribution | None]
        ],
    ) -> None:
        trials, params = TRIALS_TYPED, TRIAL_PARAMS
        if not params_with_previous:
            return
        with self.engine.begin() as connection:
            trial = connection.execute(sa.select(trials.c.state, trials.c.study_id).where(trials.c.trial_id == trial_id)).first()
            if trial is None:
                raise KeyError(optuna_models.NOT_FOUND_MSG)
            self.check_trial_is_updatable(trial_id, trial.state)
            unknown = [name for name, _, _, previous in params_with_previous if previous is None]
            stored = dict(zip(unknown, connection.execute(_stored_distributions(trial.study_id, unknown)).one())) if unknown else {}
            for param_name, _, distribution, previous in params_with_previous:
                if previous is None and stored.get(param_name) is not None:
                    previous = optuna.distributions.json_to_distribution(stored[param_name])
                if previous is not None:
                    optuna.distributions.check_distribution_compatibility(previous, distribution)
            connection.execute(sa.insert(params), [
                {"trial_id": trial_id, "param_name": name, "param_value": value,
                 "distribution_json": optuna.distributions.distribution_to_json(distribution)}
                for name, value, distribution, _ in params_with_previous
            ])

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """``RDBStorage.get_trial`` in two Core statements (``read_trials``) instead of six ORM ones; retried."""
        trials = self.retry.call(self._read, trial_id)
        if not trials:
            raise KeyError(optuna_models.NOT_FOUND_MSG)
        return trials[0]

    def _get_trials(
        self, study_id: int, states: Container[TrialState] | None, included_trial_ids: set[int], trial_id_greater_than: int
    ) -> list[FrozenTrial]:
        """``RDBStorage._get_trials`` (how Optuna's cache reads new and unfinished trials) in two Core statements; retried."""
        return self.retry.call(self._read_study_trials, study_id, states, included_trial_ids, trial_id_greater_than)

    def new_and_unsettled_trials(self, study_id: int, unsettled_ids: set[int], last_settled_id: int) -> list[FrozenTrial]:
        """The study's trials with ids in ``unsettled_ids`` or past ``last_settled_id``, as Optuna's cache reads them."""
        return self._get_trials(study_id, None, unsettled_ids, last_settled_id)

    def _read_study_trials(
        self, study_id: int, states: Container[TrialState] | None, included_trial_ids: set[int], trial_id_greater_than: int
    ) -> list[FrozenTrial]:
        trials = TRIALS_TYPED
        where = [trials.c.study_id == study_id]
        if states is not None:
            where.append(trials.c.state.in_(list(states)))  # type: ignore[call-overload]
        # As Optuna: the trials after ``trial_id_greater_than``, and those of ``included_trial_ids`` up to it.
        included = sorted(i for i in included_trial_ids if i <= trial_id_greater_than)
        if trial_id_greater_than > -1:
            if included:
                # A long list of ids is read as the range that holds them, then filtered here: no
                # dialect's limit on bound parameters applies.
                wanted = trials.c.trial_id.in_(included) if len(included) <= 500 else trials.c.trial_id >= included[0]
                where.append(sa.or_(wanted, trials.c.trial_id > trial_id_greater_than))
            else:
                where.append(trials.c.trial_id > trial_id_greater_than)
        with self.engine.connect() as connection:
            read = read_trials(connection, sa.and_(*where))
            # As Optuna, an unknown study is a KeyError; a study with trials read exists.
            if not read and connection.execute(sa.select(STUDIES.c.study_id).where(STUDIES.c.study_id == study_id)).first() is None:
                raise KeyError(optuna_models.NOT_FOUND_MSG)
        keep = set(included)
        return [t for t in read if t._trial_id > trial_id_greater_than or t._trial_id in keep or trial_id_greater_than == -1]

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """``RDBStorage._get_stale_trial_ids`` in one Core statement instead of three; retried.

        ``study.optimize`` calls it before every trial, where it was a tenth of a worker's statements.
        """
        return self.retry.call(self._read_stale_trial_ids, study_id)

    def _read_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self.heartbeat_interval is not None
        grace = timedelta(seconds=self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval)
        trials, beats = TRIALS_TYPED, HEARTBEATS_TYPED
        # The database's clock, as Optuna's, against the heartbeats it stamped; a trial without one is never stale.
        statement = (
            sa.select(trials.c.trial_id, beats.c.heartbeat, sa.func.now().label("now"))
            .join_from(trials, beats, trials.c.trial_id == beats.c.trial_id)
            .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING)
            .order_by(trials.c.trial_id)  # stale trials are failed, and their retries queued, oldest first
        )
        with self.engine.connect() as connection:
            rows = connection.execute(statement).all()
        # Naive, as Optuna compares them: PostgreSQL's now() is aware, the stored heartbeat is not.
        return [row.trial_id for row in rows if row.now.replace(tzinfo=None) - row.heartbeat > grace]

    def _read(self, where: sa.ColumnElement[bool] | int) -> list[FrozenTrial]:
        with self.engine.connect() as connection:
            return read_trials(connection, where)


for _name in _RETRIED_AS_THEY_ARE:
    if _name not in vars(QueuedRDBStorage):  # those it reads its own way are retried there
        setattr(QueuedRDBStorage, _name, retried_method(optuna.storages.RDBStorage, _name))
