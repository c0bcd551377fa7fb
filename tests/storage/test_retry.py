"""Which database errors are transient, and the retry loop, on real errors from PostgreSQL and SQLite."""

import socket
import sqlite3
import time

import pytest
import sqlalchemy as sa

from hpsearch.storage.errors import DiskFullError
from hpsearch.storage.retry import DatabaseRetry, DatabaseUnavailable, is_transient


def _error_of(url: str, **connect_args) -> BaseException:
    engine = sa.create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as error:  # noqa: BLE001  (the error is what the test inspects)
        return error
    finally:
        engine.dispose()
    raise AssertionError(f"{url} answered")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_connection_is_transient():
    assert is_transient(_error_of(f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/postgres"))


def test_an_unknown_database_is_not(postgres_server):
    url = postgres_server.rsplit("/", 1)[0] + "/no_such_database_hpsearch"
    error = _error_of(url.replace("postgresql://", "postgresql+psycopg://", 1))
    assert not is_transient(error)


def test_a_connection_the_server_terminated_is_transient(postgres_server):
    engine = sa.create_engine(postgres_server.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as victim:
            pid = victim.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            with engine.connect() as admin:
                admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(sa.exc.DBAPIError) as raised:
                victim.execute(sa.text("SELECT 1"))
        assert is_transient(raised.value)
    finally:
        engine.dispose()


def test_a_locked_sqlite_file_is_transient_and_a_syntax_error_is_not(tmp_path):
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with pytest.raises(sa.exc.OperationalError) as locked, engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO t VALUES (1)"))
        assert is_transient(locked.value)
        holder.execute("ROLLBACK")
        with pytest.raises(sa.exc.OperationalError) as wrong, engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO no_such_table VALUES (1)"))
        assert not is_transient(wrong.value)
    finally:
        engine.dispose()
        holder.close()


def test_the_call_is_retried_until_the_lock_goes(tmp_path):
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    events: list[str] = []
    retry = DatabaseRetry(f"sqlite:///{path}", timeout=30, on_outage=events.append, on_recovery=events.append)
    started = time.monotonic()

    def insert() -> None:
        if time.monotonic() - started > 0.5 and holder.in_transaction:
            holder.execute("ROLLBACK")  # the peer lets go after half a second
        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO t VALUES (1)"))

    try:
        retry.call(insert)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1  # applied once
    finally:
        engine.dispose()
        holder.close()
    assert retry.retried_calls == 1 and retry.outage_since is None
    assert events[0].startswith("database sqlite:///") and "database is locked" in events[0]
    assert events[1].startswith("database sqlite:///") and " back after " in events[1]


def test_patience_gives_up_early_and_the_timeout_for_good():
    url = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{_closed_port()}/postgres"
    engine = sa.create_engine(url)

    def connect() -> None:
        with engine.connect():
            pass

    retry = DatabaseRetry(url, timeout=1.0)
    with retry.patience(0), pytest.raises(DatabaseUnavailable) as early:
        retry.call(connect)
    assert not early.value.final
    time.sleep(0.2)
    with pytest.raises(DatabaseUnavailable) as final:
        retry.call(connect)
    assert final.value.final and final.value.seconds >= 1.0
    line = str(final.value)
    assert "s3cret" not in line and "postgres:***@" in line and "has not answered for 1 s" in line
    assert "Connection refused" in line or "connection refused" in line.lower()
    engine.dispose()


def test_a_permanent_error_is_raised_at_once():
    retry = DatabaseRetry("sqlite://", timeout=30)
    calls = []

    def wrong() -> None:
        calls.append(1)
        raise ValueError("not a database error")

    with pytest.raises(ValueError):
        retry.call(wrong)
    assert calls == [1] and retry.outage_since is None


def test_a_sqlite_file_on_a_full_disk_is_a_disk_full_error_naming_the_file_not_retried(small_disk):
    path = small_disk.path / "study.db"
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE t (x BLOB)"))
        small_disk.fill()

        def write() -> None:
            with engine.begin() as connection:
                connection.execute(sa.text("INSERT INTO t VALUES (zeroblob(200000))"))

        retry = DatabaseRetry(url, timeout=30)
        started = time.monotonic()
        with pytest.raises(DiskFullError) as raised:
            retry.call(write)
        assert time.monotonic() - started < 5  # not waited on as an outage
        assert str(raised.value) == f"no space left on {path} while writing to the study database"
        assert not is_transient(raised.value.__cause__)
    finally:
        engine.dispose()


def test_postgresql_disk_full_is_a_disk_full_error_naming_the_server_without_its_password():
    import psycopg.errors

    def write() -> None:
        # What psycopg raises for SQLSTATE 53100 (the server could not extend a file); filling a
        # server's disk is not something a test can do to the shared one.
        raise sa.exc.OperationalError("INSERT", {}, psycopg.errors.DiskFull("could not extend file: No space left on device"))

    with pytest.raises(DiskFullError) as raised:
        DatabaseRetry("postgresql://user:secret@db-host/hpsearch", timeout=30).call(write)
    assert str(raised.value) == (
        "no space left on the disk of the database server postgresql://user:***@db-host/hpsearch while writing to the study database"
    )
