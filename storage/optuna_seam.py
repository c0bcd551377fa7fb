"""The one module of hpsearch that relies on Optuna's private API and on its database layout.

Everything else in hpsearch uses Optuna's public API and imports what it needs of the things
below from here. Each is checked against the installed Optuna by
``tests/storage/test_optuna_seam.py`` (on a SQLite file and on PostgreSQL), and Optuna is pinned
to the major version that test passes on (``optuna>=5,<6`` in ``pyproject.toml``). When Optuna
changes one of them, that test says which, and this module is the only one to change.

Private things relied on, and why:

1. ``Trial._trial_id`` and ``FrozenTrial._trial_id``, the storage's id of a trial, read by
   :func:`trial_id`. The id, not the trial number, is what the storage methods take and what
   ``hpsearch_epoch_metrics`` keys its rows by. Optuna's only other routes to it are private too
   (``Study._study_id``, ``Study._storage``) or cost two queries per call.
2. ``RDBStorage._create_new_trial(study_id, template_trial)``: Optuna's cached storage, which
   ``optuna.create_study`` wraps around every ``RDBStorage``, creates trials through this method
   of its backend, not through the public ``create_new_trial``. :class:`QueuedRDBStorage`
   overrides it so that a worker with ``queue_only`` set never starts a fresh trial.
3. ``Trial._cached_frozen_trial``, the trial as its worker read it when taking it and as it has
   written since: :func:`as_taken` reads it, and :func:`remember_report` adds a report stored
   through :meth:`QueuedRDBStorage.write_with_report` to it, as ``Trial.report`` does.
4. ``optuna.storages._rdb.models``: the ``__table__`` of ``TrialModel`` (whose insert returns a
   batch of queued trials' ids in the order of its rows), ``TrialValueModel``,
   ``TrialIntermediateValueModel`` and the attribute models, typed as Optuna's ORM writes them;
   ``TrialValueModel.value_to_stored_repr`` and
   ``TrialIntermediateValueModel.intermediate_value_to_stored_repr``, how a number is stored;
   and ``NOT_FOUND_MSG``, the ``KeyError`` Optuna raises for an unknown trial.
   :class:`QueuedRDBStorage` writes a trial's end, an epoch's report with its row, and a batch of
   attributes with Core statements on these tables instead of Optuna's ORM session: at 32
   workers behind the proxy the ORM's objects and flushes were a third of the proxy's time holding
   the GIL.
5. Optuna's table layout, named here once as SQLAlchemy table clauses (:data:`STUDIES`,
   :data:`TRIALS`, ...) holding only the columns hpsearch reads or writes, and the encodings in
   them: a trial's ``state`` is the ``TrialState`` name, values and intermediate values are a
   number plus a type (``FINITE``, ``INF_POS``, ``INF_NEG``, ``NAN``; the number is NULL unless
   ``FINITE``), attributes are JSON in ``value_json``, ``study.set_metric_names`` is the study
   system attribute ``study:metric_names``, and trial datetimes are naive UTC. The take of a queued
   trial writes ``trials``; ``export.py`` and ``epoch_metrics.py`` read these tables with set-based
   SQL instead of building one ``FrozenTrial`` per trial.

6. ``optuna.storages._heartbeat.BaseHeartbeat``, as :data:`HeartbeatStorage`: the storage proxy's client derives
   from it so that ``study.optimize`` runs its heartbeat thread, and so implements its abstract
   methods; the private ``_get_stale_trial_ids`` is implemented here, at the end of this module.
7. ``Study._get_trials(deepcopy, states, use_cache)``: how ``GPSampler`` and ``TPESampler`` read
   the trials they learn from. :class:`PrunedAsComplete` answers it with pruned trials shown as
   complete at a stand-in value, so the samplers learn from pruned trials.
8. ``Study._storage`` (and ``_CachedStorage._backend``, the database behind it) and
   ``Study._study_id``: :func:`enqueue_points` queues a batch of trials in one transaction, and
   reads on through Optuna's cache find them as they find other workers' trials.
   :func:`params_in_one_request` finds the storage behind a trial's cache the same way.

9. ``RDBStorage._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)``: how
   Optuna's cached storage reads new and unfinished trials, and ``RDBStorage._set_trial_param(...,
   previous_distribution)``: how it stores a suggested parameter, and
   ``RDBStorage._get_stale_trial_ids(study_id)``: how ``fail_stale_trials`` finds the trials whose
   heartbeat is older than the grace period. :class:`QueuedRDBStorage` answers them, and
   ``get_trial``, with Core SQL over the tables of 5 (:func:`read_trials`)
   instead of the ORM, and raises as Optuna does (``KeyError(models.NOT_FOUND_MSG)`` for an
   unknown study or trial, ``UpdateFinishedTrialError``, an incompatible distribution). Within
   :func:`params_in_one_request` it holds the parameters back and stores them in one transaction.

10. ``QMCSampler._find_sample_id(study, search_space)``: which point of its sequence a trial
   takes. Optuna counts the points in a study system attribute, read and then written (its own
   TODO says the two are not atomic): two workers asking at once read the same count and draw the
   same point. :class:`NumberedQMCSampler` gives each trial the point its trial number names,
   less the trials before it created with their parameters, which it tells by the system
   attributes Optuna gives them (``fixed_params`` for an enqueued trial, ``failed_trial`` for a
   heartbeat retry).
11. ``Study._pop_waiting_trial_id()``: how ``Study.ask`` takes a queued trial. Optuna's reads
   every WAITING trial and tries to take each in turn, and workers asking at once all try them in
   the same order, so at 32 workers most tries lost a race to a peer. :class:`QueueTakingStudy`
   asks a storage that has ``take_waiting_trial`` (hpsearch's, on a database URL or through its
   proxy) for the first one instead: one statement, and through the proxy one request. Optuna's
   cache (``_CachedStorage``, its ``_backend`` and ``_trial_id_to_study_id_and_number``) sets a
   parameter only on a trial it has read, so a trial taken that it has not seen makes it read.
12. ``optuna.samplers._lazy_random_state.LazyRandomState``, the random state each of Optuna's
   samplers draws from (``_rng``, and those of the samplers it holds, such as TPE's and the GP's
   random sampler for a study's first trial). Samplers take a seed only when built, and
   ``reseed_rng`` seeds them from the OS: :func:`reseed_sampler` seeds each with a given number.

Behaviour of public methods relied on: ``Study.ask`` of a plain ``Study`` takes a queued trial
by calling ``set_trial_state_values(trial_id, RUNNING)`` on the storage and moves on to the next
WAITING trial when that returns False; :class:`QueuedRDBStorage` makes that take one atomic ``UPDATE``.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import threading
import uuid
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages._rdb import models as optuna_models
from optuna.trial import FrozenTrial, TrialState

from hpsearch.storage.attributes import (
    EPOCHS_RUN_ATTR,
    FAIL_REASON_ATTR,
    PRUNED_VALUES_ATTR,
    RETRY_OF_ATTR,
    WORKER_ATTR,
)
from hpsearch.storage.retry import DatabaseRetry, HeartbeatLedger, retried_method


# --- 5. Optuna's tables: only the columns hpsearch uses. Optuna creates and owns them. -----------
def _table(name: str, *columns: str) -> sa.TableClause:
    # Untyped columns: reads return what the driver returns (a state name, JSON text, a
    # datetime or its text), exactly as raw SQL would.
    return sa.table(name, *(sa.column(column) for column in columns))


STUDIES = _table("studies", "study_id", "study_name")
STUDY_DIRECTIONS = _table("study_directions", "study_id", "objective", "direction")
STUDY_USER_ATTRIBUTES = _table("study_user_attributes", "study_id", "key", "value_json")
STUDY_SYSTEM_ATTRIBUTES = _table("study_system_attributes", "study_id", "key", "value_json")
TRIALS = _table("trials", "trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete")
TRIAL_PARAMS = _table("trial_params", "trial_id", "param_name", "param_value", "distribution_json")
TRIAL_VALUES = _table("trial_values", "trial_id", "objective", "value", "value_type")
TRIAL_INTERMEDIATE_VALUES = _table(
    "trial_intermediate_values", "trial_id", "step", "intermediate_value", "intermediate_value_type"
)
TRIAL_USER_ATTRIBUTES = _table("trial_user_attributes", "trial_id", "key", "value_json")
TRIAL_SYSTEM_ATTRIBUTES = _table("trial_system_attributes", "trial_id", "key", "value_json")
TRIAL_HEARTBEATS = _table("trial_heartbeats", "trial_id", "heartbeat")
OPTUNA_TABLES = (
    STUDIES,
    STUDY_DIRECTIONS,
    STUDY_USER_ATTRIBUTES,
    STUDY_SYSTEM_ATTRIBUTES,
    TRIALS,
    TRIAL_PARAMS,
    TRIAL_VALUES,
    TRIAL_INTERMEDIATE_VALUES,
    TRIAL_USER_ATTRIBUTES,
    TRIAL_SYSTEM_ATTRIBUTES,
    TRIAL_HEARTBEATS,
)


class ValueType:
    """How ``trial_values.value_type`` and ``trial_intermediate_values.intermediate_value_type``
    say what a stored number is; the number is NULL unless the type is ``FINITE``."""

    FINITE = "FINITE"
    INF_POS = "INF_POS"
    INF_NEG = "INF_NEG"
    NAN = "NAN"  # intermediate values only: a trial's value is never NaN


# What a stored number that is not finite stands for, by its type.
NONFINITE_VALUES = {
    ValueType.INF_POS: float("inf"),
    ValueType.INF_NEG: float("-inf"),
    ValueType.NAN: float("nan"),
}
# The study system attribute where Optuna keeps ``study.set_metric_names``.
METRIC_NAMES_ATTR = "study:metric_names"


def state_is(column: sa.ColumnElement[Any], state: TrialState) -> sa.ColumnElement[bool]:
    """``column = '<STATE NAME>'``: Optuna stores a trial's state as its name. The name is written into
    the SQL as a literal, which PostgreSQL compares with its enum column without a cast."""
    return column == sa.literal_column(f"'{state.name}'")


# --- 1. A trial's storage id. ---------------------------------------------------------------------
def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of ``trial`` (what ``storage.get_trial`` takes), from Optuna's private ``_trial_id``."""
    return trial._trial_id


def as_taken(trial: optuna.Trial) -> FrozenTrial:
    """``trial`` as its worker read it on taking it, with what it wrote since: no query.

    What a trial is created with (a retry's history, ``retry_of``, fixed parameters) is as stored.
    """
    return trial._cached_frozen_trial


@contextmanager
def params_in_one_request(trial: optuna.Trial) -> Iterator[None]:
    """Within the block, ``trial``'s ``suggest_*`` calls are stored together at its end, where the storage can.

    Each ``suggest_*`` is a transaction of its own on a database URL, and a request of its own
    behind the storage proxy; hpsearch's storages (``params_batched``) store them in one at the
    end of the block, and none if the block raises. The trial's own copy of its parameters is
    Optuna's, set at each call as always.
    """
    storage = getattr(trial.storage, "_backend", trial.storage)  # the database behind Optuna's cache (8 above)
    batched = getattr(storage, "params_batched", None)
    if batched is None:
        yield
        return
    with batched(trial_id(trial)):
        yield


class ParamBatches:
    """The parameter writes a storage holds back, by trial id, while ``params_in_one_request``'s block runs."""

    def __init__(self) -> None:
        self._pending: dict[int, list[Any]] = {}

    def hold(self, trial_id: int, param: Any) -> bool:
        """Hold ``param`` if a batch of ``trial_id`` is open; False if it is to be stored now."""
        pending = self._pending.get(trial_id)
        if pending is None:
            return False
        pending.append(param)
        return True

    @contextmanager
    def batch(self, trial_id: int, store: Callable[[list[Any]], None]) -> Iterator[None]:
        """Hold ``trial_id``'s parameters within the block, then ``store`` them, unless the block raised."""
        pending: list[Any] = []
        self._pending[trial_id] = pending
        try:
            yield
        finally:
            del self._pending[trial_id]
        if pending:
            store(pending)


def reported(trial: optuna.Trial, step: int) -> bool:
    """Whether ``trial`` has a report at ``step``: Optuna keeps a step's first report (``Trial.report``)."""
    return step in trial._cached_frozen_trial.intermediate_values


def remember_report(trial: optuna.Trial, step: int, value: float) -> None:
    """Tell ``trial`` of a report stored outside ``Trial.report``, as ``Trial.report`` does, so that its pruner sees it."""
    trial._cached_frozen_trial.intermediate_values[step] = float(value)


# --- 2 to 4. The storage: the take of a queued trial, batched user attributes, queue-only. -------
class QueueEmpty(Exception):
    """A worker asked for a trial while ``queue_only`` was set and no trial was waiting."""


# ``trials`` as the storage reads and writes it, typed so that SQLAlchemy stores and reads the
# state and the timestamps the way Optuna's models do on every dialect (SQLite keeps a datetime as text).
_TRIALS_TYPED = sa.table(
    TRIALS.name,
    sa.column(TRIALS.c.trial_id.name, sa.Integer),
    sa.column(TRIALS.c.number.name, sa.Integer),
    sa.column(TRIALS.c.study_id.name, sa.Integer),
    sa.column(TRIALS.c.state.name, sa.Enum(TrialState)),
    sa.column(TRIALS.c.datetime_start.name, sa.DateTime),
    sa.column(TRIALS.c.datetime_complete.name, sa.DateTime),
)
_HEARTBEATS_TYPED = sa.table(
    TRIAL_HEARTBEATS.name,
    sa.column(TRIAL_HEARTBEATS.c.trial_id.name, sa.Integer),
    sa.column(TRIAL_HEARTBEATS.c.heartbeat.name, sa.DateTime),
)


def stored_now() -> datetime:
    """The current time as Optuna stores trial datetimes: naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


# The system attribute that names one creation of a trial, so that a retried creation whose first
# attempt did commit finds that trial instead of adding a second.
WRITE_ID_ATTR = "hpsearch:write_id"
# The write id a proxy client sends with a queued trial's template; the proxy stores it as WRITE_ID_ATTR.
SENT_WRITE_ID_ATTR = "hpsearch:proxy:write_id"
# The grace period the worker running a trial declared (its --grace-period, whole seconds), stored with
# its take (behind the proxy, the one its request sent): every worker and proxy process, a restarted
# one too, judges the trial by it when it is longer than their own.
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


@functools.lru_cache(maxsize=256)
def _stored_distributions(names: tuple[str, ...]) -> sa.Select:
    """One row: for each name, the distribution JSON a trial of the study (``study_id``) stored under it, or NULL.

    As Optuna checks a new parameter against: any one will do, since each was checked against
    those stored before it. One round trip for a trial's parameters instead of one each. Built
    once per set of names: a study's trials draw the same names, and SQLAlchemy then reuses it.
    """
    trials, params = _TRIALS_TYPED, TRIAL_PARAMS
    return sa.select(*(
        sa.select(params.c.distribution_json)
        .join_from(params, trials, trials.c.trial_id == params.c.trial_id)
        .where(trials.c.study_id == sa.bindparam("study_id"), params.c.param_name == name)
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
    # Whether a take stores this storage's grace period as the trial's GRACE_ATTR: a worker's does;
    # the proxy's stores the one each client sends instead.
    declares_grace: bool = True
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
        self._has_epoch_table = False  # found once: the table is never dropped

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        if state == TrialState.RUNNING and values is None:
            return self.retry.call(self._take, trial_id, stored_now(), [])
        if not state.is_finished():
            return self.retry.call(super().set_trial_state_values, trial_id, state, values)
        attempts: list[int] = []

        def finish() -> bool:
            attempts.append(1)
            try:
                return self._finish(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # An earlier attempt committed, and only its answer was lost.
                if len(attempts) > 1 and self._finished_as(trial_id, state, values):
                    return True
                raise

        return self.retry.call(finish)

    def _finish(self, trial_id: int, state: TrialState, values: Sequence[float] | None) -> bool:
        """End a trial with ``values``, as ``RDBStorage.set_trial_state_values`` does, in four statements of Core SQL.

        Optuna's goes through the ORM (its trial object, a lookup per value, a flush): at 32
        workers behind the proxy, a seventh of the proxy's time holding the GIL.
        """
        table = optuna_models.TrialValueModel.__table__
        with self.engine.begin() as connection:
            self._updatable_trial(connection, trial_id, _TRIAL_ROW_FOR_UPDATE)
            if values is not None:
                connection.execute(sa.delete(table).where(table.c.trial_id == trial_id))
                rows = []
                for objective, value in enumerate(values):
                    stored, value_type = optuna_models.TrialValueModel.value_to_stored_repr(value)
                    rows.append({"trial_id": trial_id, "objective": objective, "value": stored, "value_type": value_type})
                connection.execute(sa.insert(table), rows)
            connection.execute(_END_TRIAL, {"ended_id": trial_id, "ended_as": state, "ended_at": stored_now()})
        return True

    def _updatable_trial(
        self, connection: sa.Connection, trial_id: int, statement: sa.Select | None = None, check: bool = True
    ) -> sa.Row[Any]:
        """The trial's ``state`` and ``study_id``, read in ``connection``; ``KeyError`` and
        ``UpdateFinishedTrialError`` as Optuna raises them."""
        trial = connection.execute(statement if statement is not None else _TRIAL_ROW, {"trial_id": trial_id}).first()
        if trial is None:
            raise KeyError(optuna_models.NOT_FOUND_MSG)
        if check:
            self.check_trial_is_updatable(trial_id, trial.state)
        return trial

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
        trials = _TRIALS_TYPED
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
        ``Study.ask`` reads every WAITING trial and tries each in turn (11 above). The take
        names ``worker_name``, or this storage's ``worker_name`` (the proxy takes for its clients).
        The proxy also stores the taking worker's ``grace`` and its request's ``take_id``
        (``GRACE_ATTR``, ``TAKE_ID_ATTR``), when given.
        """
        system_attrs = {k: v for k, v in ((GRACE_ATTR, grace), (TAKE_ID_ATTR, take_id)) if v is not None}
        return self.retry.call(self._take_first, study_id, stored_now(), worker_name or self.worker_name, system_attrs, [])

    def has_waiting_trial(self, study_id: int) -> bool:
        """Whether a trial of study ``study_id`` waits in the queue: one statement, where reading the study reads every trial."""
        trials = _TRIALS_TYPED
        query = sa.select(trials.c.trial_id).where(trials.c.study_id == study_id, state_is(trials.c.state, TrialState.WAITING)).limit(1)

        def read() -> bool:
            with self.engine.connect() as connection:
                return connection.execute(query).first() is not None

        return self.retry.call(read)

    def taken_by(self, study_id: int, take_id: str) -> int | None:
        """The trial of study ``study_id`` that the take ``take_id`` took, if one did."""
        attrs, trials = optuna_models.TrialSystemAttributeModel.__table__, _TRIALS_TYPED
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
        trials = _TRIALS_TYPED
        with self.engine.begin() as connection:
            taken = None
            if attempts:  # only a retry can find that an earlier attempt committed
                taken = connection.execute(
                    sa.select(trials.c.trial_id)
                    .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING, trials.c.datetime_start == start)
                ).scalar()
            attempts.append(1)
            if taken is None:
                taken = connection.execute(_TAKE_FIRST_WAITING, {"take_study": study_id, "take_start": start}).scalar()
                if taken is None:
                    return None
                self._write_taken(connection, taken, worker_name, system_attrs)
        self.heartbeats.stored(taken)
        return taken

    def _write_taken(
        self, connection: sa.Connection, trial_id: int, worker_name: str | None, system_attrs: Mapping[str, Any] | None = None
    ) -> None:
        """In a take's transaction: the trial's first heartbeat, the name of the worker that took it, and ``system_attrs``.

        A worker's take also declares its grace period (``GRACE_ATTR``): peers with a shorter one,
        and a proxy serving the same database, would otherwise fail the trial through an outage it
        was told to ride out.
        """
        if self.declares_grace and self.grace_period is not None and GRACE_ATTR not in (system_attrs or {}):
            system_attrs = {**(system_attrs or {}), GRACE_ATTR: int(self.grace_period)}
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
        with self.engine.begin() as connection:
            self._updatable_trial(connection, trial_id, check=not finished)
            # Delete-then-insert is an upsert every dialect runs the same way.
            connection.execute(sa.delete(table).where(table.c.trial_id == trial_id, table.c.key.in_(list(attrs))))
            connection.execute(sa.insert(table), rows)
            if beat:
                now = sa.func.current_timestamp()
                beats = TRIAL_HEARTBEATS
                if connection.execute(sa.update(beats).where(beats.c.trial_id == trial_id).values(heartbeat=now)).rowcount == 0:
                    connection.execute(sa.insert(beats).values(trial_id=trial_id, heartbeat=now))

    def write_with_report(
        self, statement: sa.Executable, rows: Sequence[Mapping[str, Any]], trial_id: int, step: int, value: float
    ) -> None:
        """Execute ``statement`` with ``rows`` (an epoch row's upsert) and store the report of ``value`` at ``step``, in one transaction.

        One commit per epoch instead of two, and never a row without its report. Once the trial
        has ended, ``UpdateFinishedTrialError`` and nothing written. Not retried here: the caller
        retries the pair (the upsert and Optuna's report are idempotent).
        """
        table = optuna_models.TrialIntermediateValueModel.__table__
        stored, value_type = optuna_models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
        with self.engine.begin() as connection:
            self._updatable_trial(connection, trial_id)
            connection.execute(sa.delete(table).where(table.c.trial_id == trial_id, table.c.step == step))
            connection.execute(
                sa.insert(table).values(trial_id=trial_id, step=step, intermediate_value=stored, intermediate_value_type=value_type)
            )
            connection.execute(statement, list(rows))

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
        trials, attrs = _TRIALS_TYPED, TRIAL_SYSTEM_ATTRIBUTES
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
            self._forget_epoch_rows(connection, new_ids)

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
                grace = max(self.grace_period or 2 * (self.heartbeat_interval or 0), _declared_grace(trial))
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
            return self.retry.call(lambda: self._created(parent(study_id, None)))
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
            return self._created(parent(study_id, template))

        return self.retry.call(create)

    def _created(self, trial: FrozenTrial) -> FrozenTrial:
        """``trial``, just created by Optuna, its id cleared of a deleted trial's epoch rows (``_forget_epoch_rows``)."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.begin() as connection:
                self._forget_epoch_rows(connection, [trial_id(trial)])
        return trial

    def _forget_epoch_rows(self, connection: sa.Connection, new_ids: Sequence[int]) -> None:
        """Delete the epoch rows stored under ``new_ids``, the ids of trials being created: another trial's.

        SQLite hands the id of the last trial of a study deleted by Optuna alone (``delete_study``,
        the dashboard's delete button) to the next trial created, which would show the deleted
        trial's epochs as its own. PostgreSQL's sequences never hand an id out twice.
        """
        if connection.dialect.name != "sqlite" or not new_ids:
            return
        from hpsearch.storage.epoch_metrics import TABLE_NAME, epoch_metrics  # it reads this module's tables

        if not self._has_epoch_table:
            self._has_epoch_table = sa.inspect(connection).has_table(TABLE_NAME)
        if self._has_epoch_table:
            connection.execute(sa.delete(epoch_metrics).where(epoch_metrics.c.trial_id.in_(list(new_ids))))

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
        params = TRIAL_PARAMS
        if not params_with_previous:
            return
        with self.engine.begin() as connection:
            trial = self._updatable_trial(connection, trial_id)
            unknown = tuple(name for name, _, _, previous in params_with_previous if previous is None)
            stored = dict(zip(unknown, connection.execute(_stored_distributions(unknown), {"study_id": trial.study_id}).one())) if unknown else {}
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
        trials = _TRIALS_TYPED
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
        own = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        trials, beats = _TRIALS_TYPED, _HEARTBEATS_TYPED
        declared = optuna_models.TrialSystemAttributeModel.__table__
        # The database's clock, as Optuna's, against the heartbeats it stamped; a trial without one is never stale.
        statement = (
            sa.select(trials.c.trial_id, beats.c.heartbeat, sa.func.now().label("now"), declared.c.value_json)
            .join_from(trials, beats, trials.c.trial_id == beats.c.trial_id)
            .outerjoin(declared, (declared.c.trial_id == trials.c.trial_id) & (declared.c.key == GRACE_ATTR))
            .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING)
            .order_by(trials.c.trial_id)  # stale trials are failed, and their retries queued, oldest first
        )
        with self.engine.connect() as connection:
            rows = connection.execute(statement).all()
        # Each by the longer of this storage's grace and the one its worker declared. Naive, as Optuna
        # compares them: PostgreSQL's now() is aware, the stored heartbeat is not.
        return [
            row.trial_id for row in rows
            if row.now.replace(tzinfo=None) - row.heartbeat
            > timedelta(seconds=max(own, int(json.loads(row.value_json)) if row.value_json else 0))
        ]

    def _read(self, where: sa.ColumnElement[bool] | int) -> list[FrozenTrial]:
        with self.engine.connect() as connection:
            return read_trials(connection, where)


for _name in _RETRIED_AS_THEY_ARE:
    if _name not in vars(QueuedRDBStorage):  # those it reads its own way are retried there
        setattr(QueuedRDBStorage, _name, retried_method(optuna.storages.RDBStorage, _name))


class NumberedQMCSampler(optuna.samplers.QMCSampler):
    """``QMCSampler`` whose trial takes the point numbered by the trials drawn before it, less ``first_number`` (10 above).

    The trials drawn before trial ``n`` are those numbered below it whose parameters were not
    given: a retry (its killed or preempted trial's parameters) or an enqueued point takes a
    number but no point, so an interrupted search draws the points an uninterrupted one does
    (with retries counted, the points their numbers named were never drawn). Trial numbers are
    unique, and whether a trial's parameters were given is stored when it is created, so workers
    asking at once draw different points; a study sampled by one worker draws the points Optuna's
    own counter would have given it.
    """

    def __init__(self, *args: Any, first_number: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_number = first_number
        self._sampling = threading.local()  # the trial number of the sample_relative call running in this thread

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        self._sampling.number = trial.number
        return super().sample_relative(study, trial, search_space)

    def _find_sample_id(self, study: optuna.Study, search_space: dict[str, Any]) -> int:
        number = self._sampling.number
        drawn = sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and not _given_params(t))
        return max(drawn - self.first_number, 0)


def _given_params(trial: FrozenTrial) -> bool:
    """Whether ``trial`` was created with its parameters: enqueued (``fixed_params``) or a heartbeat retry (``failed_trial``)."""
    return bool(trial.system_attrs.get("fixed_params")) or "failed_trial" in trial.system_attrs


def _declared_grace(trial: FrozenTrial) -> int:
    """The grace period ``trial``'s worker declared (``GRACE_ATTR``), 0 if none."""
    return int(trial.system_attrs.get(GRACE_ATTR, 0))


def reseed_sampler(sampler: optuna.samplers.BaseSampler, seed: int) -> int:
    """Seed every random state ``sampler`` draws from, its own and its inner samplers' (12 above); return how many."""
    seeded, seen = 0, set()

    def visit(holder: object) -> None:
        nonlocal seeded
        seen.add(id(holder))
        for value in vars(holder).values():
            if isinstance(value, LazyRandomState):
                value.rng.seed(seed)
                seeded += 1
            elif isinstance(value, optuna.samplers.BaseSampler) and id(value) not in seen:
                visit(value)

    visit(sampler)
    return seeded


class QueueTakingStudy(optuna.Study):
    """``optuna.Study`` whose ``ask`` takes a queued trial in one call to a storage that can (11 above).

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


def has_waiting_trial(study: optuna.Study) -> bool:
    """Whether a trial of ``study`` waits in the queue; asked of the storage where it can answer without reading the study."""
    storage = getattr(study._storage, "_backend", study._storage)  # the database behind Optuna's cache
    ask = getattr(storage, "has_waiting_trial", None)  # QueuedRDBStorage's, or the proxy client's
    if ask is None:
        return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    return ask(study._study_id)


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


# --- 9. Trials read with Core SQL, as ``RDBStorage`` builds them. --------------------------------
# Optuna's ORM reads a trial in six statements (the row, then one per child table) and builds a
# mapped object per row; a worker reads its trial three times per trial (the take, the tell, the
# callbacks), about a third of its statements. Here: the trials' rows, then every child row of them
# in one UNION ALL, each cast to (key text, number float, text).
# (table, its id column, the key, the number or None, the text) for each child table of trials.
_CHILDREN = (
    ("trial_params", "param_id", "param_name", "param_value", "distribution_json"),
    ("trial_values", "trial_value_id", "objective", "value", "value_type"),
    ("trial_intermediate_values", "trial_intermediate_value_id", "step", "intermediate_value", "intermediate_value_type"),
    ("trial_user_attributes", "trial_user_attribute_id", "key", None, "value_json"),
    ("trial_system_attributes", "trial_system_attribute_id", "key", None, "value_json"),
)
_PARAM, _VALUE, _INTERMEDIATE, _USER, _SYSTEM = range(len(_CHILDREN))


def _stored_number(number: float | None, value_type: str) -> float:
    return float(number) if value_type == ValueType.FINITE else NONFINITE_VALUES[value_type]


def _local(stored: datetime | None) -> datetime | None:
    """A stored naive-UTC datetime in naive local time, as Optuna's ``TrialModel`` shows it."""
    return None if stored is None else stored.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


def _children_statement() -> sa.CompoundSelect:
    parts = []
    for kind, (name, row_id, key, number, text) in enumerate(_CHILDREN):
        child = sa.table(name, *(sa.column(c) for c in ("trial_id", row_id, key, text, number) if c is not None))
        parts.append(
            sa.select(
                child.c.trial_id,
                sa.literal_column(str(kind), sa.Integer).label("kind"),
                child.c[row_id].label("row_id"),
                sa.cast(child.c[key], sa.String).label("key"),
                sa.cast(child.c[number] if number else sa.null(), sa.Float).label("number"),
                sa.cast(child.c[text], sa.Text).label("text"),
            ).where(child.c.trial_id.in_(sa.bindparam("ids", expanding=True)))
        )
    return sa.union_all(*parts)


# Built once: SQLAlchemy then compiles each once per engine, and a read costs the round trips.
_CHILDREN_OF = _children_statement()
_TRIAL_BY_ID = sa.select(_TRIALS_TYPED).where(_TRIALS_TYPED.c.trial_id == sa.bindparam("trial_id"))
_TRIAL_ROW = sa.select(_TRIALS_TYPED.c.state, _TRIALS_TYPED.c.study_id).where(_TRIALS_TYPED.c.trial_id == sa.bindparam("trial_id"))
_TRIAL_ROW_FOR_UPDATE = _TRIAL_ROW.with_for_update()
_END_TRIAL = (
    sa.update(_TRIALS_TYPED)
    .where(_TRIALS_TYPED.c.trial_id == sa.bindparam("ended_id"))
    .values(state=sa.bindparam("ended_as"), datetime_complete=sa.bindparam("ended_at"))
)
# A study's first WAITING trial taken, in one statement, so that SQLite takes its write lock at
# once (a read first could not upgrade); a row a peer is taking is passed over (SKIP LOCKED).
_TAKE_FIRST_WAITING = (
    sa.update(_TRIALS_TYPED)
    .where(
        _TRIALS_TYPED.c.trial_id == sa.select(_TRIALS_TYPED.c.trial_id)
        .where(_TRIALS_TYPED.c.study_id == sa.bindparam("take_study"), _TRIALS_TYPED.c.state == TrialState.WAITING)
        .order_by(_TRIALS_TYPED.c.number)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery(),
        _TRIALS_TYPED.c.state == TrialState.WAITING,
    )
    .values(state=TrialState.RUNNING, datetime_start=sa.bindparam("take_start"))
    .returning(_TRIALS_TYPED.c.trial_id)
)
_IDS_PER_READ = 500  # under every dialect's limit on bound parameters


def read_trials(connection: sa.Connection, where: sa.ColumnElement[bool] | int) -> list[FrozenTrial]:
    """The trials that ``where`` (on ``_TRIALS_TYPED``, or one trial's id) selects, by id, each as ``RDBStorage.get_trial`` builds it."""
    if isinstance(where, int):
        rows = connection.execute(_TRIAL_BY_ID, {"trial_id": where}).all()
    else:
        rows = connection.execute(sa.select(_TRIALS_TYPED).where(where).order_by(_TRIALS_TYPED.c.trial_id)).all()
    children: dict[int, list[Any]] = {row.trial_id: [] for row in rows}
    ids = list(children)
    for at in range(0, len(ids), _IDS_PER_READ):
        for child in connection.execute(_CHILDREN_OF, {"ids": ids[at : at + _IDS_PER_READ]}):
            children[child.trial_id].append(child)
    distributions: dict[str, Any] = {}  # JSON to distribution, parsed once per read
    return [
        _frozen_trial(row, sorted(children[row.trial_id], key=lambda c: (c.kind, c.row_id)), distributions) for row in rows
    ]


def _frozen_trial(row: Any, children: list[Any], distributions: dict[str, Any]) -> FrozenTrial:
    params: dict[str, Any] = {}
    trial_distributions: dict[str, Any] = {}
    values: dict[int, float] = {}
    intermediate: dict[int, float] = {}
    user: dict[str, Any] = {}
    system: dict[str, Any] = {}
    for child in children:
        if child.kind == _PARAM:
            distribution = distributions.get(child.text)
            if distribution is None:
                distribution = distributions[child.text] = optuna.distributions.json_to_distribution(child.text)
            trial_distributions[child.key] = distribution
            params[child.key] = distribution.to_external_repr(child.number)
        elif child.kind == _VALUE:
            values[int(child.key)] = _stored_number(child.number, child.text)
        elif child.kind == _INTERMEDIATE:
            intermediate[int(child.key)] = _stored_number(child.number, child.text)
        else:
            (user if child.kind == _USER else system)[child.key] = json.loads(child.text)
    return FrozenTrial(
        number=row.number,
        state=row.state,
        value=None,
        values=[values[objective] for objective in sorted(values)] if values else None,
        datetime_start=_local(row.datetime_start),
        datetime_complete=_local(row.datetime_complete),
        params=params,
        distributions=trial_distributions,
        user_attrs=user,
        system_attrs=system,
        intermediate_values=intermediate,
        trial_id=row.trial_id,
    )
