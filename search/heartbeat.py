"""A worker's liveness settings, and their flags: the heartbeat, the grace period and ``--db-timeout``.

Kept apart from the orchestrator, which imports Optuna and the storage layer, so that building
any parser (``hpsearch --help`` included) imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.errors import UsageError
from hpsearch.storage.retry import DEFAULT_DB_TIMEOUT_S


@dataclass(frozen=True)
class Heartbeat:
    """How a worker shows it is alive, and how long it waits for the database.

    Optuna's RDB heartbeat: a trial silent for ``grace_period`` seconds is failed and retried
    (``max_retry`` times). A worker rides out a database outage of up to ``db_timeout`` seconds,
    but stops training a trial whose heartbeat it could not store for ``grace_period -
    interval`` seconds, before another worker can take it over.
    """

    interval: int = 10
    grace_period: int = 30
    max_retry: int = 3
    db_timeout: float = DEFAULT_DB_TIMEOUT_S


def add_heartbeat_arguments(parser: ArgumentParser, proxy: bool = False) -> None:
    """The liveness flags: a worker's (or a search's), or with ``proxy`` the storage proxy's, which judges and serves."""
    defaults = Heartbeat()
    interval = ("seconds between checks for trials whose worker went silent" if proxy
                else "seconds between a running trial's heartbeats")
    grace = ("seconds without a heartbeat before a trial counts as dead and is retried, unless its worker declared longer"
             if proxy else "seconds without a heartbeat before a trial counts as dead and is retried")
    db_timeout = ("seconds each request waits out an unreachable database, retrying, before the proxy answers that it "
                  "is away (the proxy keeps serving)" if proxy
                  else "seconds a worker waits out an unreachable database, retrying, before it stops with exit 1")
    parser.add_argument("--heartbeat-interval", type=int, default=defaults.interval, help=f"{interval} (default: %(default)s)")
    parser.add_argument("--grace-period", type=int, default=defaults.grace_period, help=f"{grace} (default: %(default)s)")
    parser.add_argument("--db-timeout", type=float, default=defaults.db_timeout, help=f"{db_timeout} (default: %(default)g)")


def heartbeat_from(args: object) -> Heartbeat:
    interval, grace, db_timeout = args.heartbeat_interval, args.grace_period, args.db_timeout  # type: ignore[attr-defined]
    if interval < 1 or grace <= interval:
        raise UsageError(f"--grace-period ({grace}) must exceed --heartbeat-interval ({interval}), which must be at least 1")
    if not db_timeout > 0:
        raise UsageError(f"--db-timeout must be a positive number of seconds (got {db_timeout:g})")
    return Heartbeat(interval, grace, db_timeout=db_timeout)


def heartbeat_flags(heartbeat: Heartbeat) -> list[str]:
    """The flags (of ``add_heartbeat_arguments``) that give another command ``heartbeat``, where it differs from the defaults."""
    usual = Heartbeat()
    flags = []
    for flag, value, default in (("--heartbeat-interval", heartbeat.interval, usual.interval),
                                 ("--grace-period", heartbeat.grace_period, usual.grace_period),
                                 ("--db-timeout", heartbeat.db_timeout, usual.db_timeout)):
        if value != default:
            flags += [flag, f"{value:g}"]
    return flags
