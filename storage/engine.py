"""Database engines and Optuna storages for a storage URL."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Mapping, Sequence

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.storages._rdb import models as optuna_models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import Engine

from hpsearch.storage.urls import StorageURLError, mask_password, parse_storage_url

SQLITE_BUSY_TIMEOUT_S = 60


def engine_options(url: str) -> tuple[str, dict[str, Any]]:
    """The SQLAlchemy URL string and engine keyword arguments for ``url``."""
    parsed = parse_storage_url(url)
    if parsed.get_backend_name() == "sqlite":
        # A long busy timeout lets several local workers queue for the write lock instead of
        # failing with "database is locked".
        return parsed.render_as_string(hide_password=False), {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return parsed.render_as_string(hide_password=False), {"pool_pre_ping": True}


# SQLite's result codes for a file that is not a database, and for damaged pages; extended
# codes (SQLITE_CORRUPT_INDEX, ...) carry the primary code in their low byte.
_SQLITE_DAMAGE_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


class DamagedDatabaseError(StorageURLError, sqlalchemy.exc.OperationalError):
    """The SQLite file a storage URL names is not a database, or its pages are damaged.

    It is both kinds of error that callers already report in one line: a ``StorageURLError``
    (the read-only commands) and SQLAlchemy's ``OperationalError``, which the search and the
    worker report as "cannot open storage URL: <orig>". ``orig`` says what is wrong and what
    to do; ``str()`` is that whole line.
    """

    def __init__(self, url: str, reason: str) -> None:
        # quick_check's reports open with a "*** in database main ***" line; the page is below it.
        lines = [line.strip() for line in reason.splitlines() if line.strip() and not line.startswith("***")]
        reason = lines[0] if lines else reason.strip()
        detail = (
            f"the file is damaged or is not a SQLite database ({reason}); "
            "restore it from a backup, or pass --storage with another file"
        )
        sqlalchemy.exc.OperationalError.__init__(self, None, None, sqlite3.DatabaseError(detail))
        self.url, self.reason = url, reason
        self.line = f"cannot open storage {mask_password(url)}: {detail}"

    def __str__(self) -> str:
        return self.line

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.url, self.reason)


def sqlite_damage(error: BaseException) -> sqlite3.DatabaseError | None:
    """The SQLite error behind ``error`` that says the file is damaged or not a database, if any.

    Follows SQLAlchemy's ``orig`` and the cause and context chain, since Optuna re-raises
    database errors as its own ``StorageInternalError``.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        code = getattr(current, "sqlite_errorcode", 0) if isinstance(current, sqlite3.DatabaseError) else 0
        if (code & 0xFF) in _SQLITE_DAMAGE_CODES:
            return current
        pending += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return None


@contextmanager
def damaged_sqlite_errors(url: str) -> Iterator[None]:
    """Turn any error that says the SQLite file of ``url`` is damaged into ``DamagedDatabaseError``."""
    try:
        yield
    except DamagedDatabaseError:
        raise
    except Exception as error:
        damage = sqlite_damage(error)
        if damage is None:
            raise
        raise DamagedDatabaseError(url, str(damage)) from error


def _check_pages(connection: sqlite3.Connection, url: str) -> None:
    """``DamagedDatabaseError`` unless every page of the file reads back as SQLite wrote it.

    ``quick_check`` reads the whole file (about half a second for 200 MB); a worker runs it
    once, before it writes, since a write into a damaged file spreads the damage.
    """
    problems = [row[0] for row in connection.execute("PRAGMA quick_check(1)").fetchall()]
    if problems != ["ok"]:
        raise DamagedDatabaseError(url, str(problems[0]) if problems else "quick_check returned nothing")


def _switch_to_wal(connection: sqlite3.Connection, deadline: float) -> None:
    while True:
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def prepare_sqlite(url: str) -> None:
    """Check a SQLite database's pages, then switch it to WAL, which lets readers run while one worker writes.

    WAL is a property of the file, so setting it once covers every later connection. The
    switch needs a moment alone with the file and does not wait out the busy timeout, so
    workers starting together on a new file retry it. A file that is damaged or not a database
    is a ``DamagedDatabaseError``; one that cannot be opened (no such folder, locked for a
    minute) is the ``OperationalError`` SQLAlchemy's engine would raise a moment later, which
    callers already report in one line.
    """
    parsed = parse_storage_url(url)
    if parsed.get_backend_name() != "sqlite":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    try:
        connection = sqlite3.connect(parsed.database, timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            with damaged_sqlite_errors(url):
                _check_pages(connection, url)
                _switch_to_wal(connection, deadline)
        finally:
            connection.close()
    except sqlite3.OperationalError as error:
        raise sqlalchemy.exc.OperationalError(None, None, error) from None


def create_engine(url: str) -> Engine:
    """A SQLAlchemy engine on the study database, configured like the Optuna storage's."""
    sa_url, kwargs = engine_options(url)
    return sqlalchemy.create_engine(sa_url, **kwargs)


class QueueEmpty(Exception):
    """A worker asked for a trial while ``queue_only`` was set and no trial was waiting."""


# Optuna's own ``trials`` table, only the columns the take touches; the types let SQLAlchemy
# store the state and the timestamp the way Optuna's models do on every dialect.
_TRIALS = sqlalchemy.table(
    "trials",
    sqlalchemy.column("trial_id", sqlalchemy.Integer),
    sqlalchemy.column("state", sqlalchemy.Enum(TrialState)),
    sqlalchemy.column("datetime_start", sqlalchemy.DateTime),
)


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
        take = (
            sqlalchemy.update(_TRIALS)
            .where(_TRIALS.c.trial_id == trial_id, _TRIALS.c.state == TrialState.WAITING)
            .values(state=TrialState.RUNNING, datetime_start=datetime.now())
        )
        with self.engine.begin() as connection:
            return connection.execute(take).rowcount == 1

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Set several user attributes of a running trial in one transaction.

        ``Trial.set_user_attr`` runs a lookup, an upsert and a commit per key; a trial's closing
        attributes are about 15 keys, and on SQLite each commit holds the write lock that other
        workers wait on. Values are stored as ``set_user_attr`` stores them (JSON).
        """
        # Optuna's private RDB models and session helper: tests/storage/test_engine.py compares
        # the result with set_user_attr's, so a change in a future Optuna shows there.
        table = optuna_models.TrialUserAttributeModel.__table__
        rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
        with _create_scoped_session(self.scoped_session, True) as session:
            trial = optuna_models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
            # Delete-then-insert is an upsert every dialect runs the same way.
            session.execute(sqlalchemy.delete(table).where(table.c.trial_id == trial_id, table.c.key.in_(list(attrs))))
            session.execute(sqlalchemy.insert(table), rows)

    # Optuna's caching layer creates trials through this private method, not create_new_trial;
    # tests/search/test_workers.py fails if a future Optuna changes that.
    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        if self.queue_only and template_trial is None:
            raise QueueEmpty("no trial is waiting in the queue")
        return super()._create_new_trial(study_id, template_trial)


def open_optuna_storage(url: str, **kwargs: Any) -> QueuedRDBStorage:
    """An Optuna storage on ``url`` (extra ``kwargs`` go to ``RDBStorage``, e.g. heartbeats).

    A SQLite file that is damaged or not a database is a ``DamagedDatabaseError``.
    """
    prepare_sqlite(url)
    sa_url, engine_kwargs = engine_options(url)
    with damaged_sqlite_errors(url):
        return QueuedRDBStorage(sa_url, engine_kwargs=engine_kwargs, **kwargs)
