"""Storage URLs: where the study lives, how it is named on screen, and what is allowed."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from hpsearch.storage.errors import StorageError

STORAGE_ENV = "HPSEARCH_STORAGE"
DEFAULT_DB_NAME = "hpsearch.db"


class StorageURLError(StorageError):
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
        # An "@" in a query password would be taken for the one before the host.
        parsed = make_url(_QUERY_PASSWORD.sub(lambda m: m[1] + m[0][len(m[1]) :].replace("@", "%40"), url))
    except (ArgumentError, ValueError):
        raise StorageURLError(
            f"malformed storage URL {mask_password(url)!r}; use sqlite:///path/to/file.db "
            "or postgresql://user:password@host:5432/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.host:  # sqlite://name.db: two slashes, and the name is read as a host
            raise StorageURLError(
                f"{mask_password(url)} names no file (a SQLite URL has three slashes before a relative path): "
                f"sqlite:///{parsed.host}{'/' + parsed.database if parsed.database else ''}, or sqlite:////absolute/path.db"
            )
        if parsed.database in (None, "", ":memory:"):
            raise StorageURLError("a SQLite storage URL needs a file: sqlite:///path/to/file.db")
        return parsed
    if backend in ("postgresql", "postgres"):  # postgres://, libpq's other spelling (Heroku, many .env files)
        if parsed.host and "@" in parsed.host:
            # An unencoded "@" in the password: SQLAlchemy ends the password at the first "@" and
            # takes the rest for the host, which no host name can be and which the driver's
            # errors would print. The last "@" is the one before the host.
            rest, _, host = parsed.host.rpartition("@")
            parsed = parsed.set(password=f"{parsed.password or ''}@{rest}", host=host)
        if not parsed.database:
            raise StorageURLError(f"storage URL {mask_password(url)!r} names no database; add /dbname")
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "grpc":
        raise StorageURLError(
            f"{mask_password(url)} is an hpsearch proxy: workers, create and searches use it, but this command reads the "
            "database itself; pass its sqlite:/// or postgresql:// URL"
        )
    raise StorageURLError(
        f"unsupported storage URL scheme {parsed.drivername!r}; use sqlite:///, postgresql:// or grpc://host:port (hpsearch proxy)"
    )


PROXY_SCHEME = "grpc"
DEFAULT_PROXY_PORT = 13000


@dataclass(frozen=True)
class ProxyAddress:
    """Where an ``hpsearch proxy`` listens, from a ``grpc://host:port`` storage URL."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{PROXY_SCHEME}://{self.host}:{self.port}"


def is_proxy_url(url: str) -> bool:
    """Whether ``url`` names an ``hpsearch proxy`` (``grpc://``) rather than a database."""
    return url.lower().startswith(f"{PROXY_SCHEME}://")


def parse_proxy_url(url: str) -> ProxyAddress:
    """``grpc://host[:port]`` as a ``ProxyAddress`` (port 13000 if none); anything else in it is refused.

    The proxy holds the database's URL and password; a worker's URL names only where it listens.
    """
    shown = mask_password(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise StorageURLError(f"malformed proxy URL {shown!r}; use grpc://host:port, e.g. grpc://127.0.0.1:13000") from None
    if not parts.hostname:
        raise StorageURLError(f"proxy URL {shown!r} names no host; use grpc://host:port, e.g. grpc://127.0.0.1:13000")
    if parts.username or parts.password or parts.path.strip("/") or parts.query or parts.fragment:
        raise StorageURLError(
            f"proxy URL {shown!r} holds more than host and port; use grpc://host:port "
            "(the database's URL and password stay with hpsearch proxy --storage)"
        )
    return ProxyAddress(parts.hostname, DEFAULT_PROXY_PORT if port is None else port)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for other backends."""
    parsed = parse_storage_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" else None


def absolute_storage_url(url: str) -> str:
    """``url`` with a SQLite file's path made absolute (from this process's folder), as another process would reach it."""
    if is_proxy_url(url) or not url.startswith("sqlite:"):
        return url
    path = sqlite_path(url)
    if path is None or path.is_absolute():
        return url
    return f"sqlite:///{path.resolve()}"


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# libpq, and so psycopg, also takes the password as a query parameter.
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#\s]*", re.IGNORECASE)
# In text: a URL in single quotes, in double quotes, or up to the next blank.
_URL_IN_TEXT = re.compile(rf"'({_SCHEME.pattern}[^']*)'|\"({_SCHEME.pattern}[^\"]*)\"|({_SCHEME.pattern}\S*)")
MASK = "***"


def _mask_one(url: str) -> str:
    """``url`` (text that starts with a scheme) with its password masked."""
    head, rest = url.split("://", 1)
    head += "://"
    # The query's password first: an "@" in it would pass for the one that ends the user info.
    rest = _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", rest)
    # The password ends at the *last* "@": passwords hold unencoded "@", "/", "?", ":" more
    # often than a query holds "@", and hiding too much never leaks (SQLAlchemy's own parser
    # stops at the first "@" and would show the rest). "sqlite:///a@b.db" has no credentials.
    user_info, at, host = rest.rpartition("@")
    if at and not rest.startswith("/") and ":" in user_info:
        user = user_info.split(":", 1)[0]
        rest = f"{user}:{MASK}@{host}"
    return head + rest


def mask_password(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    A string that starts with a URL is one URL to its end (an unencoded password may hold
    anything, blanks included). In other text, such as an error message, a URL in quotes ends
    at the closing quote, any other at the next blank. The rest of the text is kept as written.
    """
    start = _SCHEME.search(text)
    if start is None:
        # One word with credentials but no "://": a mistyped URL (postgresql//user:pw@host/db,
        # user:pw@host/db) that the malformed-URL message shows. All after the first ":" before
        # the last "@" is hidden: too much rather than a piece of the password.
        user_info, at, host = text.rpartition("@")
        if at and ":" in user_info and not any(c.isspace() for c in text.strip()):
            return f"{user_info.split(':', 1)[0]}:{MASK}@{host}"
        return text
    if not text[: start.start()].strip():
        return text[: start.start()] + _mask_one(text[start.start() :])

    def masked(match: re.Match[str]) -> str:
        url = match[match.lastindex or 0]
        return match[0].replace(url, _mask_one(url), 1)

    return _URL_IN_TEXT.sub(masked, text)
