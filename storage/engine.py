"""How an engine is configured for a parsed storage URL, and the SQLite file checks made before a write."""

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
from sqlalchemy.engine import URL

from hpsearch.storage.retry import error_chain
from hpsearch.storage.urls import StorageURLError, mask_password

__all__ = [
    "SQLITE_BUSY_TIMEOUT_S",
    "DamagedDatabaseError",
    "damaged_sqlite_errors",
    "engine_options",
    "prepare_sqlite",
    "reader_engine_options",
    "sqlite_damage",
]

SQLITE_BUSY_TIMEOUT_S = 60


def engine_options(parsed: URL) -> tuple[str, dict[str, Any]]:
    """The SQLAlchemy URL string and engine keyword arguments for a parsed storage URL."""
    if parsed.get_backend_name() == "sqlite":
        # A long busy timeout lets several local workers queue for the write lock instead of
        # failing with "database is locked".
        return parsed.render_as_string(hide_password=False), {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return parsed.render_as_string(hide_password=False), {"pool_pre_ping": True}


def reader_engine_options(parsed: URL) -> tuple[str, dict[str, Any]]:
    """``engine_options`` for a reader: a SQLite file it cannot open in place is read immutable.

    A WAL database is read through a ``-shm`` file beside it, which cannot be made on a
    read-only mount or in another user's folder ("attempt to write a readonly database");
    read immutable, it needs nothing but the file.
    """
    sa_url, kwargs = engine_options(parsed)
    path = Path(parsed.database) if parsed.get_backend_name() == "sqlite" else None
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
        header = _file_header(url)
        if header and not header.startswith(SQLITE_HEADER):
            # Most likely another kind of file (a script, a CSV): a wrong path before a damaged study.
            detail = (
                "the file is not a SQLite database (it does not begin as one); pass --storage with the study "
                "database's file, or restore this one from a backup if it was one"
            )
        else:
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


# What every SQLite database file begins with (sqlite.org/fileformat.html).
SQLITE_HEADER = b"SQLite format 3\x00"


def _file_header(url: str) -> bytes | None:
    """The first bytes of the SQLite file ``url`` names; None where it cannot be read."""
    try:
        database = sqlalchemy.engine.make_url(url).database
        with open(database or "", "rb") as file:
            return file.read(len(SQLITE_HEADER))
    except (OSError, ValueError, sqlalchemy.exc.ArgumentError):
        return None


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


def prepare_sqlite(parsed: URL, url: str) -> None:
    """Check a SQLite database's pages, then switch it to WAL, which lets readers run while one worker writes.

    WAL is a property of the file, so setting it once covers every later connection. The
    switch needs a moment alone with the file and does not wait out the busy timeout, so
    workers starting together on a new file retry it. A file that is damaged or not a database
    is a ``DamagedDatabaseError``; one that cannot be opened (no such folder, locked for a
    minute) is the ``OperationalError`` SQLAlchemy's engine would raise a moment later, which
    callers already report in one line.
    """
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
