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
3. ``optuna.storages._rdb.storage._create_scoped_session(scoped_session, ignore_integrity_error)``
   and the ``RDBStorage.scoped_session`` attribute: the session Optuna's own writes use (commit on
   exit, rollback and ``StorageInternalError`` on a database error), used by
   :meth:`QueuedRDBStorage.set_trial_user_attrs` so that its batch behaves like Optuna's writes.
4. ``optuna.storages._rdb.models``: ``TrialModel.find_or_raise_by_id(trial_id, session)`` (a
   ``KeyError`` for an unknown trial) and ``TrialUserAttributeModel.__table__``, for the same batch.
5. Optuna's table layout, named here once as SQLAlchemy table clauses (:data:`STUDIES`,
   :data:`TRIALS`, ...) holding only the columns hpsearch reads or writes, and the encodings in
   them: a trial's ``state`` is the ``TrialState`` name, values and intermediate values are a
   number plus a type (``FINITE``, ``INF_POS``, ``INF_NEG``, ``NAN``; the number is NULL unless
   ``FINITE``), attributes are JSON in ``value_json``, ``study.set_metric_names`` is the study
   system attribute ``study:metric_names``, and trial datetimes are naive UTC. The take of a queued
   trial writes ``trials``; ``export.py`` and ``epoch_metrics.py`` read these tables with set-based
   SQL instead of building one ``FrozenTrial`` per trial.

Behaviour of public methods relied on: ``Study.ask`` takes a queued trial by calling
``set_trial_state_values(trial_id, RUNNING)`` on the storage and moves on to the next WAITING
trial when that returns False; :class:`QueuedRDBStorage` makes that take one atomic ``UPDATE``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models as optuna_models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState


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


# --- 2 to 4. The storage: the take of a queued trial, batched user attributes, queue-only. -------
class QueueEmpty(Exception):
    """A worker asked for a trial while ``queue_only`` was set and no trial was waiting."""


# The take writes these columns of ``trials``, typed so that SQLAlchemy stores the state and the
# timestamp the way Optuna's models do on every dialect.
_TRIALS_WRITTEN = sa.table(
    TRIALS.name,
    sa.column(TRIALS.c.trial_id.name, sa.Integer),
    sa.column(TRIALS.c.state.name, sa.Enum(TrialState)),
    sa.column(TRIALS.c.datetime_start.name, sa.DateTime),
)


def stored_now() -> datetime:
    """The current time as Optuna stores trial datetimes: naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class QueuedRDBStorage(optuna.storages.RDBStorage):
    """``RDBStorage`` whose trial queue hands each WAITING trial to exactly one worker.

    Optuna takes a queued trial by reading its state and then writing RUNNING; SQLite
    ignores ``SELECT ... FOR UPDATE``, so two workers could both take it. Here the take is
    one conditional ``UPDATE``, atomic on SQLite and PostgreSQL alike.

    With ``queue_only`` set, ``Study.ask`` either takes a WAITING trial or raises
    ``QueueEmpty``; it never starts a fresh one. Queued trials and heartbeat retries are
    created from a template and are always allowed.
    """

    queue_only: bool = False

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        if state != TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        trials = _TRIALS_WRITTEN
        take = (
            sa.update(trials)
            .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
            .values(state=TrialState.RUNNING, datetime_start=stored_now())
        )
        with self.engine.begin() as connection:
            return connection.execute(take).rowcount == 1

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Set several user attributes of a running trial in one transaction.

        ``Trial.set_user_attr`` runs a lookup, an upsert and a commit per key; a trial's closing
        attributes are about 15 keys, and on SQLite each commit holds the write lock that other
        workers wait on. Values are stored as ``set_user_attr`` stores them (JSON).
        """
        table = optuna_models.TrialUserAttributeModel.__table__
        rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
        with _create_scoped_session(self.scoped_session, True) as session:
            trial = optuna_models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
            # Delete-then-insert is an upsert every dialect runs the same way.
            session.execute(sa.delete(table).where(table.c.trial_id == trial_id, table.c.key.in_(list(attrs))))
            session.execute(sa.insert(table), rows)

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        if self.queue_only and template_trial is None:
            raise QueueEmpty("no trial is waiting in the queue")
        return super()._create_new_trial(study_id, template_trial)
