"""``StudyDatabase``: a study database opened once per process, for searching or for reading."""

from __future__ import annotations

import hashlib
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy as sa
from optuna.exceptions import StorageInternalError
from sqlalchemy.engine import URL, Connection, Engine

from hpsearch.storage.engine import (
    SQLITE_BUSY_TIMEOUT_S,
    DamagedDatabaseError,
    damaged_sqlite_errors,
    engine_options,
    prepare_sqlite,
    reader_engine_options,
    sqlite_damage,
)
from hpsearch.storage.errors import StorageOpenError
from hpsearch.storage.optuna_seam import STUDIES, QueuedRDBStorage
from hpsearch.storage.reading import StorageReadError, StudyInfo, find_study, unknown_study
from hpsearch.storage.retry import DatabaseRetry, database_reason
from hpsearch.storage.urls import is_proxy_url, mask_password, parse_storage_url

if TYPE_CHECKING:
    from hpsearch.storage.epoch_metrics import EpochMetricsTable

__all__ = ["StudyDatabase", "close_all", "reading"]

# Optuna creates about 20 tables and rows one by one; processes racing on a new database may each
# lose a few of those races before one of them has made them all.
CREATION_TRIES = 20

# Every database this process opened and has not dropped, for ``close_all`` at exit.
_OPENED: weakref.WeakSet[StudyDatabase] = weakref.WeakSet()


class StudyDatabase:
    """One study database: its URL parsed once, one engine, one retry policy, opened for what the caller does.

    ``open_for_search`` is for the processes that write (a search, a worker, ``create``,
    ``simulate``); ``open_for_reading`` for those that only look (tables, export, report,
    dashboard, replay). Either hands out the Optuna storage (``storage``) and the per-epoch
    table (``epoch_table``) on the same engine. Used as a context manager, it is closed at the
    end, and any error inside that says its SQLite file is damaged becomes a
    ``DamagedDatabaseError``. Every error a user can act on is a ``StorageError`` (one line).
    """

    def __init__(
        self, url: str, parsed: URL | None, storage: optuna.storages.BaseStorage, retry: DatabaseRetry, writable: bool
    ) -> None:
        self.url, self.parsed, self.storage, self.retry, self.writable = url, parsed, storage, retry, writable
        self._epoch_table: EpochMetricsTable | None = None
        self._held_locks: dict[str, int] = {}  # study name -> depth, so that a holder may take its lock again
        self._locks_guard = threading.Lock()
        _OPENED.add(self)

    @classmethod
    def open_for_search(
        cls,
        url: str,
        *,
        retry: DatabaseRetry | None = None,
        wait: bool = False,
        create: bool = True,
        storage_class: type[QueuedRDBStorage] = QueuedRDBStorage,
        **options: Any,
    ) -> StudyDatabase:
        """Open ``url`` to run trials in: a new SQLite file is made (unless not ``create``), Optuna's tables are created.

        A SQLite file's pages are checked and it is switched to WAL first (``prepare_sqlite``).
        Every storage call then rides out outages through ``retry`` (``DatabaseRetry(url)`` if
        not given); ``options`` go to ``QueuedRDBStorage`` (heartbeats, ``on_stale``). Opening is
        not retried unless ``wait`` (a worker that a scheduler may start while the server
        restarts): a database down when a command starts is one line now, not minutes of waiting.
        A ``grpc://`` URL opens the study through an ``hpsearch proxy`` (``proxy_client``).
        """
        if is_proxy_url(url):
            from hpsearch.storage.proxy_client import open_through_proxy

            return open_through_proxy(url, retry=retry, wait=wait, **options)
        parsed = parse_storage_url(url)
        if not create and parsed.get_backend_name() == "sqlite" and not Path(parsed.database).is_file():
            raise StorageOpenError(f"no study database at {parsed.database}; pass --storage, or create the study with hpsearch create")
        retry = retry if retry is not None else DatabaseRetry(url)
        sa_url, engine_kwargs = engine_options(parsed)

        def attempt() -> QueuedRDBStorage:
            prepare_sqlite(parsed, url)
            # Each lost race means another process created a table, so a few tries always get through.
            for tries_left in reversed(range(CREATION_TRIES)):
                try:
                    with damaged_sqlite_errors(url):
                        return storage_class(sa_url, engine_kwargs=engine_kwargs, retry=retry, **options)
                except sa.exc.DBAPIError as error:
                    if tries_left == 0 or not _lost_creation_race(error):
                        raise
                    time.sleep(random.uniform(0.01, 0.1))
            raise AssertionError("unreachable")

        try:
            storage = retry.call(attempt) if wait else attempt()
        except DamagedDatabaseError:
            raise
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
            folder = Path(parsed.database).parent if parsed.get_backend_name() == "sqlite" else None
            if folder is not None and not folder.is_dir():
                reason += f" (no folder {folder}: create it, or pass another --storage)"
            raise StorageOpenError(f"cannot open storage {mask_password(url)}: {mask_password(reason)}") from None
        except StorageInternalError as error:  # Optuna's wrapper of a database error while it checks the schema
            raise StorageOpenError(f"cannot open storage {mask_password(url)}: {database_reason(error)}") from None
        return cls(url, parsed, storage, retry, writable=True)

    @classmethod
    def open_for_reading(cls, url: str) -> StudyDatabase:
        """Open an existing study database to read it: no file, table or row is created, no journal mode switched.

        A missing SQLite file, a server that does not answer, a database without Optuna's
        tables or with another Optuna version's are each a ``StorageReadError``. A SQLite file
        that cannot be opened in place (a read-only folder) is read immutable.
        """
        parsed = parse_storage_url(url)
        if parsed.get_backend_name() == "sqlite" and not Path(parsed.database).is_file():
            raise StorageReadError(
                f"no database file {Path(parsed.database).resolve()}; pass --storage URL (the storage argument in Python) or set HPSEARCH_STORAGE "
                "(the default is sqlite:///hpsearch.db in the working directory)"
            )
        sa_url, engine_kwargs = reader_engine_options(parsed)
        with damaged_sqlite_errors(url):
            _check_readable(url, sa.create_engine(sa_url, **engine_kwargs))
            # Built only now: Optuna's storage reads its version table as it is made.
            storage = optuna.storages.RDBStorage(
                sa_url, engine_kwargs=engine_kwargs, skip_table_creation=True, skip_compatibility_check=True
            )
        database = cls(url, parsed, storage, DatabaseRetry(url), writable=False)
        current, head = storage.get_current_version(), storage.get_head_version()
        if current != head:
            database.close()
            raise StorageReadError(
                f"cannot read {database.shown_url}: its tables were written by another Optuna version (schema {current}, "
                f"this Optuna reads {head}); run optuna storage upgrade --storage URL, or install the Optuna that wrote it"
            )
        return database

    @property
    def engine(self) -> Engine:
        """The one engine: the Optuna storage's, shared by the epoch table and the readers."""
        return self.storage.engine

    @property
    def shown_url(self) -> str:
        """The URL as it may be printed: its password masked."""
        return mask_password(self.url)

    @property
    def epoch_table(self) -> EpochMetricsTable:
        """``hpsearch_epoch_metrics`` on this database's engine (created here when opened for search)."""
        if self._epoch_table is None:
            from hpsearch.storage.epoch_metrics import EpochMetricsTable

            self._epoch_table = EpochMetricsTable(self)
        return self._epoch_table

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reads on the shared engine."""
        with damaged_sqlite_errors(self.url), self.engine.connect() as connection:
            yield connection

    def find_study(self, name: str) -> StudyInfo:
        """The study called ``name``; ``UnknownStudyError`` lists the studies there are."""
        with self.connect() as connection:
            return find_study(connection, name, self.url)

    def load_study(self, name: str) -> optuna.Study:
        """``optuna.load_study`` on this database; an unknown name is an ``UnknownStudyError`` listing the studies there."""
        try:
            return optuna.load_study(study_name=name, storage=self.storage)
        except KeyError:
            names = [study.study_name for study in self.storage.get_all_studies()]
            raise unknown_study(name, names, self.url) from None

    @contextmanager
    def queue_lock(self, study_name: str) -> Iterator[bool]:
        """Hold study ``study_name``'s queue lock for the block: one process at a time creates, claims and queues it.

        On PostgreSQL it is a transaction-scoped advisory lock keyed by the study's name, held on a
        connection of its own; on SQLite, the write lock (``BEGIN IMMEDIATE``) of a lock file beside
        the database, since holding the database's own write lock would block this process's
        writes too. Either way the database releases it when the block ends or the process dies,
        and a process already holding it takes it again at once.

        The block is given whether another process held the lock when this one asked (always False
        through the storage proxy, and for a holder taking it again): workers that find the queue
        empty together then wait for the one topping it up instead of each reading it again.
        """
        with self._locks_guard:
            depth = self._held_locks.get(study_name, 0)
            self._held_locks[study_name] = depth + 1
        try:
            if depth:
                yield False
                return
            with self._take_queue_lock(study_name) as waited:
                yield waited
        finally:
            with self._locks_guard:
                self._held_locks[study_name] -= 1

    def hold_queue_lock(self, study_name: str) -> AbstractContextManager[bool]:
        """Study ``study_name``'s queue lock, taken on entry even if this process holds it: not re-entrant.

        For the storage proxy, which holds locks for many clients: its own holding of a study's
        lock must not let another client in, as ``queue_lock`` lets its holder in again.
        """
        return self._take_queue_lock(study_name)

    @contextmanager
    def _take_queue_lock(self, study_name: str) -> Iterator[bool]:
        parsed = self.parsed
        if parsed.get_backend_name() == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                yield False  # a database no other process can open
                return
            path = Path(parsed.database)
            lock_file = path.with_name(path.name + ".queue-lock")

            def take_sqlite() -> tuple[sqlite3.Connection, bool]:
                # Not bound to its thread: the storage proxy releases a lock in another request's thread.
                connection = sqlite3.connect(lock_file, timeout=0, isolation_level=None, check_same_thread=False)
                try:
                    try:
                        connection.execute("BEGIN IMMEDIATE")
                        return connection, False
                    except sqlite3.OperationalError:  # held: wait for it
                        connection.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
                        connection.execute("BEGIN IMMEDIATE")
                        return connection, True
                except sqlite3.OperationalError as error:
                    connection.close()
                    raise sa.exc.OperationalError("BEGIN IMMEDIATE", None, error) from None  # "locked": transient

            held, waited = self.retry.call(take_sqlite)
            try:
                yield waited
            finally:
                held.close()  # ends the transaction, and with it the lock
            return
        key = int.from_bytes(hashlib.blake2b(f"hpsearch-queue:{study_name}".encode(), digest_size=8).digest(), "big", signed=True)

        def take_advisory() -> tuple[Connection, bool]:
            connection = self.engine.connect()
            try:
                waited = not connection.execute(sa.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key}).scalar_one()
                if waited:
                    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            except Exception:
                connection.close()
                raise
            return connection, waited

        locked, waited = self.retry.call(take_advisory)
        try:
            yield waited
        finally:
            try:
                locked.rollback()  # ends the transaction, and with it the lock
            finally:
                locked.close()

    def close(self) -> None:
        """Release the engine's connections."""
        self.storage.engine.dispose()

    def __enter__(self) -> StudyDatabase:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        self.close()
        if isinstance(error, Exception) and not isinstance(error, DamagedDatabaseError):
            damage = sqlite_damage(error)
            if damage is not None:
                raise DamagedDatabaseError(self.url, str(damage)) from error


def _lost_creation_race(error: sa.exc.DBAPIError) -> bool:
    """Whether another process created Optuna's tables while this one did (workers starting on a new database).

    Optuna's ``create_all`` checks for each table, then creates it; the loser of a race meets the
    winner's table ("already exists") or, on PostgreSQL, its row type (a unique violation in
    ``pg_type``); then both insert the schema's version row (a unique violation in
    ``alembic_version``). Building the storage again finds all of it and creates nothing.
    """
    message = str(error.orig)
    return any(sign in message for sign in ("already exists", "pg_type_typname_nsp_index", "alembic_version"))


def _check_readable(url: str, engine: Engine) -> None:
    """``StorageReadError`` unless the database answers and holds Optuna's tables; ``engine`` is disposed."""
    try:
        with engine.connect() as connection:
            has_studies = sa.inspect(connection).has_table(STUDIES.name)
    except sa.exc.DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        raise StorageReadError(f"cannot read storage {mask_password(url)}: {mask_password(reason)}") from None
    finally:
        engine.dispose()
    if not has_studies:
        raise StorageReadError(f"{mask_password(url)} holds no Optuna studies (it has no '{STUDIES.name}' table)")


def close_all() -> None:
    """Close every study database this process opened: its connections end, and SQLite folds its WAL into the file."""
    for database in list(_OPENED):
        try:
            database.close()
        except Exception:  # noqa: BLE001  a server gone or a file damaged: the process is ending, and the OS closes what is left
            pass


@contextmanager
def reading(source: str | StudyDatabase) -> Iterator[StudyDatabase]:
    """``source`` itself when it is an open database, else the database at that URL, opened for reading and closed after."""
    if isinstance(source, StudyDatabase):
        yield source
        return
    with StudyDatabase.open_for_reading(source) as database:
        yield database
