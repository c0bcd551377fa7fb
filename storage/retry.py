"""Riding out database outages: which errors are transient, and a retry loop bounded by ``--db-timeout``.

A worker of a week-long search meets a restarted PostgreSQL server, a dropped connection or a
SQLite file locked by a peer every so often. Each of its database calls goes through one
``DatabaseRetry``: a transient error is retried with backoff until the database answers, and
only an outage longer than ``timeout`` seconds stops the worker, with ``DatabaseUnavailable``.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from hpsearch.storage.errors import DiskFullError, error_chain, is_disk_full

# SQLAlchemy and the URL helpers are imported by the functions that use them: the CLI imports
# this module for its exit-code mapping and the --db-timeout default, and --help must not wait.

__all__ = [
    "DEFAULT_DB_TIMEOUT_S",
    "DatabaseRetry",
    "DatabaseUnavailable",
    "DatabaseWaitStopped",
    "database_reason",
    "error_chain",
    "is_transient",
]

DEFAULT_DB_TIMEOUT_S = 120.0
T = TypeVar("T")

# PostgreSQL SQLSTATEs that say "try again": the connection is gone or refused (class 08), the
# server is shutting down or starting up (57P01-57P03), too many connections, a serialization
# failure or a deadlock whose loser is rolled back (40001, 40P01).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01")
# What libpq and SQLite say when no SQLSTATE comes with the error (the connection never opened,
# or broke mid-query).
_TRANSIENT_MESSAGES = (
    "connection refused",
    "could not connect",
    "server closed the connection",
    "terminating connection",
    "connection is closed",
    "connection is lost",
    "the database system is",  # ... starting up / shutting down / in recovery mode
    "consuming input failed",
    "could not receive data",
    "could not send data",
    "connection reset",
    "connection timed out",
    "ssl syscall error",
    "no connection to the server",
    "database is locked",
    "database table is locked",
)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) says the database is away for a while, not that the call is wrong.

    Optuna re-raises database errors as ``StorageInternalError``, so the chain is followed. A
    wrong password or an unknown database is not transient: waiting will not fix it.
    """
    import sqlalchemy.exc

    for cause in error_chain(error):
        if _proxy_unreachable(cause):
            return True
        if isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated:
            return True
        if isinstance(cause, sqlalchemy.exc.PendingRollbackError):
            return True  # a session whose connection broke mid-transaction; a fresh one works
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate:
            if sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES):
                return True
            continue  # the server said what is wrong, and it is something else
        if isinstance(cause, (sqlite3.OperationalError, sqlalchemy.exc.OperationalError)) or type(cause).__module__.startswith("psycopg"):
            message = str(cause).lower()
            if any(text in message for text in _TRANSIENT_MESSAGES):
                return True
    return False


# gRPC status codes of an ``hpsearch proxy`` that is away (restarting, unreachable, overloaded), not wrong.
_TRANSIENT_PROXY_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})
# How gRPC reports an exception raised by a server's handler: status UNKNOWN, with this before its str().
_SERVER_EXCEPTION_PREFIX = "Exception calling application: "
# What a ``DatabaseUnavailable`` says, so a proxy's worker knows the proxy's database is away.
_UNANSWERED = "has not answered for"


def _what_is_away(url: str) -> str:
    from hpsearch.storage.urls import is_proxy_url

    return "storage proxy" if is_proxy_url(url) else "database"


def _proxy_unreachable(error: BaseException) -> bool:
    """Whether ``error`` is a gRPC call to the storage proxy that failed because the proxy, or its database, is away.

    Told by the status code's name, so that this module needs no grpc (an optional dependency).
    """
    code = getattr(error, "code", None)
    if not callable(code) or not _is_grpc_error(error):
        return False
    try:
        name = getattr(code(), "name", None)
    except Exception:  # noqa: BLE001  (an error object without a status)
        return False
    if name in _TRANSIENT_PROXY_CODES:
        return True
    # The proxy itself answered, but its database is away: it gave up after its own --db-timeout,
    # and the worker waits out the rest of its own.
    details = _proxy_details(error)
    return name == "UNKNOWN" and (_UNANSWERED in details or any(text in details.lower() for text in _TRANSIENT_MESSAGES))


def _is_grpc_error(error: BaseException) -> bool:
    """Whether ``error`` is a gRPC call's failure; grpc is not imported where no proxy was used."""
    grpc = sys.modules.get("grpc")
    return grpc is not None and isinstance(error, grpc.RpcError)


def _proxy_details(error: BaseException) -> str:
    """The message of a gRPC error from the proxy, without gRPC's prefix for a server-side exception."""
    details = getattr(error, "details", None)
    text = str(details() or "") if callable(details) else ""
    return text.removeprefix(_SERVER_EXCEPTION_PREFIX)


class DatabaseUnavailable(Exception):
    """A database call gave up: the database did not answer within the call's patience.

    ``final`` is True when the outage has lasted past ``--db-timeout``: the worker stops, and
    ``str()`` is the one line it prints. Otherwise a caller with limited patience (the epoch's
    writes, the heartbeat) gave up early and tries again later.
    """

    def __init__(self, url: str, seconds: float, reason: str, final: bool) -> None:
        super().__init__(url, seconds, reason, final)
        self.url, self.seconds, self.reason, self.final = url, seconds, reason, final

    def __str__(self) -> str:
        from hpsearch.storage.urls import mask_password

        return f"the {_what_is_away(self.url)} {mask_password(self.url)} {_UNANSWERED} {self.seconds:.0f} s ({self.reason})"


class DatabaseWaitStopped(DatabaseUnavailable):
    """A database call gave up before ``--db-timeout`` because the worker was told to stop (preempted).

    Final, like an outage past the timeout: the running trial is left to its heartbeat retry,
    since the database that would record anything else is away.
    """

    def __init__(self, url: str, seconds: float, reason: str) -> None:
        super().__init__(url, seconds, reason, True)

    def __str__(self) -> str:
        return f"{super().__str__()}; stopped waiting for it: the worker was told to stop"


def database_reason(error: BaseException) -> str:
    """The first line of the innermost database message behind ``error``, password masked."""
    from hpsearch.storage.urls import mask_password

    text = ""
    for cause in error_chain(error):
        if _is_grpc_error(cause) and callable(getattr(cause, "details", None)):
            return mask_password(f"proxy: {_proxy_details(cause)}")  # str() of a gRPC error is a multi-line dump
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        if lines and not lines[0].startswith(("An exception is raised during the commit", "(Background on")):
            text = lines[0]
            if cause.__module__.startswith(("psycopg", "sqlite3")):
                break
    return mask_password(text or type(error).__name__)


class DatabaseRetry:
    """Retries transient database errors with backoff until the database has been away ``timeout`` seconds.

    The outage clock is shared by every thread of the worker: it starts at the first failure and
    stops at the first success, so the heartbeat thread and the training thread agree on how
    long the database has been gone. ``patience`` caps one thread's wait below that, for calls
    that should give up early and try again later. ``on_outage``/``on_recovery`` get one line
    each per outage (the worker prints them). ``before_retry`` runs before each new attempt (the
    storage drops its broken session there). ``give_up_at``, when it returns a
    ``time.monotonic()`` value, ends every wait there with ``DatabaseWaitStopped`` (a preempted
    worker must exit within the scheduler's grace, not at the end of an outage).
    """

    def __init__(
        self,
        url: str,
        timeout: float = DEFAULT_DB_TIMEOUT_S,
        on_outage: Callable[[str], None] | None = None,
        on_recovery: Callable[[str], None] | None = None,
        before_retry: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.on_outage = on_outage
        self.on_recovery = on_recovery
        self.before_retry = before_retry
        self.give_up_at: Callable[[], float | None] | None = None
        self.outage_since: float | None = None
        self.retried_calls = 0
        self._local = threading.local()
        self._lock = threading.Lock()

    @contextmanager
    def patience(self, seconds: float) -> Iterator[None]:
        """Within the block, this thread's calls give up after ``seconds`` of failures (0: after the first)."""
        previous = getattr(self._local, "patience", None)
        self._local.patience = seconds
        try:
            yield
        finally:
            self._local.patience = previous

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)``, retried through transient errors; calls made inside it are not retried again."""
        if getattr(self._local, "depth", 0):
            return function(*args, **kwargs)
        started, delay, attempts = time.monotonic(), 0.05, 0
        while True:
            self._local.depth = 1
            try:
                result = function(*args, **kwargs)
            except Exception as error:
                if not is_transient(error):
                    if is_disk_full(error) and not isinstance(error, DiskFullError):
                        raise DiskFullError(self.disk_shown(), "writing to the study database") from error
                    raise
                attempts += 1
                now = time.monotonic()
                outage = self._failed(now, error)
                patience = getattr(self._local, "patience", None)
                final = now - outage >= self.timeout
                if final or (patience is not None and now - started >= patience):
                    raise DatabaseUnavailable(self.url, now - outage, database_reason(error), final) from error
                stop_at = self.give_up_at() if self.give_up_at is not None else None
                if stop_at is not None and now >= stop_at:
                    raise DatabaseWaitStopped(self.url, now - outage, database_reason(error)) from error
                # Jitter keeps workers that lost the server together from reconnecting in lockstep.
                wait = min(delay * (1 + random.random()), self.timeout - (now - outage))
                if patience is not None:
                    wait = min(wait, max(patience - (now - started), 0.0))
                if stop_at is not None:
                    wait = min(wait, stop_at - now)
                self._sleep(max(wait, 0.0))
                delay = min(delay * 2, 2.0)
                if self.before_retry is not None:
                    self.before_retry()
                continue
            finally:
                self._local.depth = 0
            if attempts:
                self.retried_calls += 1
            self._succeeded()
            return result

    def disk_shown(self) -> str:
        """Where the database's disk is, as an operator looks for it: the SQLite file, or the server."""
        from hpsearch.storage.urls import mask_password, sqlite_path

        path = sqlite_path(self.url)
        return str(path) if path is not None else f"the disk of the database server {mask_password(self.url)}"

    def _sleep(self, seconds: float) -> None:
        # In short naps: a stop requested during a nap (a signal handler sets it) ends the wait
        # within a tenth of a second, not at the end of a backoff of up to 2 s.
        if self.give_up_at is None:
            time.sleep(seconds)
            return
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            stop_at = self.give_up_at() if self.give_up_at is not None else None
            if stop_at is not None and time.monotonic() >= stop_at:
                return
            time.sleep(min(left, 0.1))

    def _failed(self, now: float, error: BaseException) -> float:
        from hpsearch.storage.urls import mask_password

        with self._lock:
            if self.outage_since is None:
                self.outage_since = now
                if self.on_outage is not None:
                    self.on_outage(
                        f"{_what_is_away(self.url)} {mask_password(self.url)} unavailable ({database_reason(error)}); "
                        f"retrying for up to {self.timeout:.0f} s"
                    )
            return self.outage_since

    def _succeeded(self) -> None:
        if self.outage_since is None:
            return
        from hpsearch.storage.urls import mask_password

        with self._lock:
            if self.outage_since is not None:
                seconds = time.monotonic() - self.outage_since
                self.outage_since = None
                if self.on_recovery is not None:
                    self.on_recovery(f"{_what_is_away(self.url)} {mask_password(self.url)} back after {seconds:.1f} s")


class HeartbeatLedger:
    """When this process last had each trial's heartbeat stored, and why its last beat failed.

    A worker stops training a trial whose heartbeat it could not store for too long (a peer, or
    the storage proxy, will judge it dead); this is what it asks. ``beat`` never raises, so the
    heartbeat thread, which Optuna ends at its first exception, lives to beat again.
    """

    def __init__(self) -> None:
        self.stored_at: dict[int, float] = {}
        self.errors: dict[int, Exception] = {}  # trial id -> why the last beat failed (its kind tells a full disk)

    def beat(self, trial_id: int, retry: DatabaseRetry, interval: float, store: Callable[[], Any]) -> None:
        """``store()`` the heartbeat through ``retry`` for up to one ``interval``; a failure is noted in ``errors``.

        A beat within half an interval of the last stored one is skipped: the take stores a
        trial's first heartbeat, and Optuna's heartbeat thread beats as it starts, a moment later.
        """
        last = self.stored_at.get(trial_id)
        if last is not None and time.monotonic() - last < interval / 2:
            return
        try:
            with retry.patience(interval):
                retry.call(store)
        except Exception as error:  # noqa: BLE001  (any error: the thread must live to beat again)
            self.errors[trial_id] = error
            return
        self.stored(trial_id)

    def stored(self, trial_id: int) -> None:
        """A heartbeat of ``trial_id`` was stored now (a beat, or the take that wrote the first one)."""
        self.stored_at[trial_id] = time.monotonic()
        self.errors.pop(trial_id, None)

    def age(self, trial_id: int) -> float:
        """Seconds since a heartbeat of ``trial_id`` was last stored (0 if this process never took it)."""
        last = self.stored_at.get(trial_id)
        return 0.0 if last is None else time.monotonic() - last


def retried_method(parent_class: type, name: str) -> Callable[..., Any]:
    """``parent_class.name`` as a method of a subclass that calls it through ``self.retry`` (a ``DatabaseRetry``).

    For storages whose calls are idempotent as they are: reads, and upserts keyed by trial and name.
    """
    parent = getattr(parent_class, name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self.retry.call(parent, self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"``{parent_class.__name__}.{name}``, retried through transient errors (``self.retry``)."
    return method

