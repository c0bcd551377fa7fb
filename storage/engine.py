"""Database engines and Optuna storages for a storage URL."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.engine import Engine

from hpsearch.storage.urls import parse_storage_url

SQLITE_BUSY_TIMEOUT_S = 60


def engine_options(url: str) -> tuple[str, dict[str, Any]]:
    """The SQLAlchemy URL string and engine keyword arguments for ``url``."""
    parsed = parse_storage_url(url)
    if parsed.get_backend_name() == "sqlite":
        # A long busy timeout lets several local workers queue for the write lock instead of
        # failing with "database is locked".
        return parsed.render_as_string(hide_password=False), {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return parsed.render_as_string(hide_password=False), {"pool_pre_ping": True}


def prepare_sqlite(url: str) -> None:
    """Switch a SQLite database to WAL, which lets readers run while one worker writes.

    WAL is a property of the file, so setting it once covers every later connection. The
    switch needs a moment alone with the file and does not wait out the busy timeout, so
    workers starting together on a new file retry it.
    """
    parsed = parse_storage_url(url)
    if parsed.get_backend_name() != "sqlite":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    connection = sqlite3.connect(parsed.database, timeout=SQLITE_BUSY_TIMEOUT_S)
    try:
        while True:
            try:
                if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        connection.close()


def create_engine(url: str) -> Engine:
    """A SQLAlchemy engine on the study database, configured like the Optuna storage's."""
    sa_url, kwargs = engine_options(url)
    return sqlalchemy.create_engine(sa_url, **kwargs)


def open_optuna_storage(url: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    """An Optuna ``RDBStorage`` on ``url`` (extra ``kwargs`` go to ``RDBStorage``, e.g. heartbeats)."""
    prepare_sqlite(url)
    sa_url, engine_kwargs = engine_options(url)
    return optuna.storages.RDBStorage(sa_url, engine_kwargs=engine_kwargs, **kwargs)
