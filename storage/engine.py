"""Database engines and Optuna storages for a storage URL."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy
import sqlalchemy.exc
from sqlalchemy.engine import Engine

# The queue-aware Optuna storage lives in the one module that touches Optuna's private API;
# it is re-exported here, where callers open storages.
from hpsearch.storage.optuna_seam import QueuedRDBStorage, QueueEmpty
from hpsearch.storage.retry import DatabaseRetry, error_chain
from hpsearch.storage.urls import StorageURLError, mask_password, parse_storage_url, sqlite_path

__all__ = [
    "SQLITE_BUSY_TIMEOUT_S",
    "DamagedDatabaseError",
    "QueueEmpty",
    "QueuedRDBStorage",
    "create_engine",
    "damaged_sqlite_errors",
    "engine_options",
    "reader_engine_options",
    "open_optuna_storage",
    "prepare_sqlite",
    "sqlite_damage",
]

SQLITE_BUSY_TIMEOUT_S = 60


def engine_options(url: str) -> tuple[str, dict[str, Any]]:
    """The SQLAlchemy URL string and engine keyword arguments for ``url``."""
    parsed = parse_storage_url(url)
    if parsed.get_backend_name() == "sqlite":
        # A long busy timeout lets several local workers queue for the write lock instead of
        # failing with "database is locked".
        return parsed.render_as_string(hide_password=False), {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return parsed.render_as_string(hide_password=False), {"pool_pre_ping": True}


def reader_engine_options(url: str) -> tuple[str, dict[str, Any]]:
    """``engine_options`` for a reader: a SQLite file it cannot open in place is read immutable.

    A WAL database is read through a ``-shm`` file beside it, which cannot be made on a
    read-only mount or in another user's folder ("attempt to write a readonly database");
    read immutable, it needs nothing but the file.
    """
    sa_url, kwargs = engine_options(url)
    path = sqlite_path(url)
    if path is not None and not _readable_in_place(path):
        return f"sqlite:///file:{quote(str(path.resolve()))}?mode=ro&immutable=1&uri=true", kwargs
    return sa_url, kwargs


def _readable_in_place(path: Path) -> bool:
    if not path.is_file():
        return True  # the reader's own check names the missing file
    try:
        connection = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()
    except sqlite3.OperationalError:
        return False
    except sqlite3.DatabaseError:
        return True  # damaged: the reader reports it as such
    return True


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
    for current in error_chain(error):
        code = getattr(current, "sqlite_errorcode", 0) if isinstance(current, sqlite3.DatabaseError) else 0
        if (code & 0xFF) in _SQLITE_DAMAGE_CODES:
            return current
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


def create_engine(url: str, read_only: bool = False) -> Engine:
    """A SQLAlchemy engine on the study database, configured like the Optuna storage's (``read_only``: a reader's)."""
    sa_url, kwargs = reader_engine_options(url) if read_only else engine_options(url)
    return sqlalchemy.create_engine(sa_url, **kwargs)


def open_optuna_storage(url: str, **kwargs: Any) -> QueuedRDBStorage:
    """An Optuna storage on ``url`` (extra ``kwargs`` go to ``QueuedRDBStorage``: heartbeats, ``retry``).

    Opening it is not retried: a database that is down when a command starts is one line now,
    not two minutes of waiting. A SQLite file that is damaged or not a database is a
    ``DamagedDatabaseError``.
    """
    prepare_sqlite(url)
    sa_url, engine_kwargs = engine_options(url)
    kwargs.setdefault("retry", DatabaseRetry(url))
    with damaged_sqlite_errors(url):
        return QueuedRDBStorage(sa_url, engine_kwargs=engine_kwargs, **kwargs)
