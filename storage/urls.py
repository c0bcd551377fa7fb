"""Storage URLs: where the study lives, how it is named on screen, and what is allowed."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

STORAGE_ENV = "HPSEARCH_STORAGE"
DEFAULT_DB_NAME = "hpsearch.db"


class StorageURLError(ValueError):
    """A storage URL that cannot be used; the message says how to fix it."""


def resolve_storage_url(cli_url: str | None, output_dir: str | os.PathLike[str] = ".") -> str:
    """``--storage``, else ``$HPSEARCH_STORAGE``, else ``sqlite:///<output_dir>/hpsearch.db``."""
    if cli_url:
        return cli_url
    if os.environ.get(STORAGE_ENV):
        return os.environ[STORAGE_ENV]
    return f"sqlite:///{Path(output_dir).resolve() / DEFAULT_DB_NAME}"


def parse_storage_url(url: str) -> URL:
    """Parse and check ``url``; PostgreSQL URLs are pointed at the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StorageURLError(
            f"malformed storage URL {mask_password(url)!r}; use sqlite:///path/to/file.db "
            "or postgresql://user:password@host:5432/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise StorageURLError("a SQLite storage URL needs a file: sqlite:///path/to/file.db")
        return parsed
    if backend == "postgresql":
        if not parsed.database:
            raise StorageURLError(f"storage URL {mask_password(url)!r} names no database; add /dbname")
        return parsed.set(drivername="postgresql+psycopg")
    raise StorageURLError(
        f"unsupported storage URL scheme {parsed.drivername!r}; use sqlite:/// or postgresql://"
    )


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for other backends."""
    parsed = parse_storage_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" else None


def mask_password(url: str) -> str:
    """``url`` with its password replaced by ``***``; text that is not a URL is masked by hand."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        head, sep, tail = url.rpartition("@")
        if not sep or "://" not in head:
            return url
        scheme, _, credentials = head.partition("://")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{tail}" if ":" in credentials else url
    return parsed.render_as_string(hide_password=True)
