"""``StorageError``: what the storage layer raises when a study database cannot be used as asked.

Also where a full disk is recognised (``is_disk_full``), whichever write met it: the study
database's or a checkpoint's.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator


class StorageError(ValueError):
    """The study database cannot be used as asked; ``str()`` is one line saying what is wrong and what to do.

    Every kind the user can act on derives from it (a malformed URL, a missing file, a damaged
    one, a server that does not answer when a command starts, an unknown study), so the CLI
    turns them all into one line and exit 2 in one place. An outage during a run is not one:
    that is ``DatabaseUnavailable``, a run-time failure.
    """


class StorageOpenError(StorageError):
    """The database did not answer, or refused, when it was opened."""


class DiskFullError(StorageError):
    """No space was left where hpsearch writes: ``path`` (a checkpoint folder, the study database's file).

    Retrying cannot help and every trial after it would fail the same way, so a worker stops at
    once: its running trial is handed back to be resumed (``outcome`` says how), and the CLI prints
    ``str()`` as its one line, with its own exit code (``EXIT_DISK_FULL``), not 2: something was
    written before the disk filled.
    """

    def __init__(self, path: str, doing: str, outcome: str = "") -> None:
        super().__init__(path, doing, outcome)
        self.path, self.doing, self.outcome = path, doing, outcome

    def __str__(self) -> str:
        return f"no space left on {self.path} while {self.doing}" + (f"; {self.outcome}" if self.outcome else "")


# ENOSPC: the filesystem is full; EDQUOT: the user's quota is. Either way, space must be freed.
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# SQLite's SQLITE_FULL, whose message is all that its Python driver keeps; PostgreSQL's disk_full.
_SQLITE_FULL_MESSAGE = "database or disk is full"
_DISK_FULL_SQLSTATE = "53100"


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it wraps: SQLAlchemy's ``orig``, and the cause and context chain."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [getattr(current, "orig", None), current.__cause__, current.__context__]


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error``, or what it wraps, says a disk is full: ENOSPC/EDQUOT, SQLite's or PostgreSQL's "full".

    torch.save reports a full disk as a ``RuntimeError`` from its zip writer, with the
    ``OSError`` behind it, so the chain is followed.
    """
    for cause in error_chain(error):
        if isinstance(cause, DiskFullError):
            return True
        if isinstance(cause, OSError) and cause.errno in _NO_SPACE_ERRNOS:
            return True
        if getattr(cause, "sqlstate", None) == _DISK_FULL_SQLSTATE:
            return True
        if type(cause).__module__.startswith(("sqlite3", "sqlalchemy")) and _SQLITE_FULL_MESSAGE in str(cause).lower():
            return True
    return False
