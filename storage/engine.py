"""Database engines and Optuna storages for a storage URL."""

from __future__ import annotations

import sqlite3
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

    WAL is a property of the file, so setting it once here covers every later connection.
    """
    parsed = parse_storage_url(url)
    if parsed.get_backend_name() != "sqlite":
        return
    connection = sqlite3.connect(parsed.database, timeout=SQLITE_BUSY_TIMEOUT_S)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
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
