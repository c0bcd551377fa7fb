"""Fixtures every test folder shares: study databases on a real SQLite file and on PostgreSQL.

``sqlite_url``      a SQLite URL in the test's tmp_path (the file does not exist yet).
``postgres_url``    a database of this test session's own on the real PostgreSQL server, made
                    at the start and dropped at the end through ``$HPSEARCH_TEST_POSTGRES_URL``
                    (default postgresql://postgres@127.0.0.1:5432/postgres), so rows that other
                    users of the server leave behind are never seen. The tests of one session
                    share it: a test must name its studies with ``study_name`` (or names that
                    start with it); they are deleted afterwards, epoch rows included. Skipped
                    when no server answers, unless ``$CI`` is set: then that is a failure.
``storage_url``     parametrized over both backends (test ids ``sqlite`` and ``postgres``).
``study_name``      a name no other test or run uses.
``s3_server``       a real S3-compatible server (moto's, ``tests/s3_server.py``) on 127.0.0.1, for the session.
``s3_bucket``       a new bucket on it, with the ``AWS_*`` variables (dummy credentials, its endpoint) set for
                    this process and the subprocesses it starts.
``small_disk``      a 2 MiB tmpfs in tmp_path (``tests/small_disk.py``) that a test fills for a real ENOSPC; skipped
                    where the mount is refused (not root, a container), unless ``$CI`` is set.
``yahpo_data``      YAHPO Gym's data folder (``$HPSEARCH_YAHPO_DATA``, else ``shared/yahpo_data`` beside the
                    repository); skipped when absent, unless ``$CI`` is set: then that is a failure.

The suite runs in one process per core (pytest-xdist, see pyproject.toml). Each of those gets
one torch thread, and so does every subprocess it starts: two processes of two threads each on
two cores ran the small tensors of these tests several times slower than one thread each.
Tests of the slowest modules start first, so that none of them is left for the end.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.s3_server import MotoServer
from tests.small_disk import SmallDisk

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Their tests last 10 to 45 s each: waits for heartbeats to go stale, restarted databases, 200-trial studies.
SLOW_MODULES = ("test_db_outages.py", "test_workers.py", "test_resume.py", "test_cli.py", "test_samplers.py")

# The connection that creates and drops each session's database; any database of the server will do.
POSTGRES_ADMIN_URL = os.environ.get("HPSEARCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_problem(url: str) -> str | None:
    """Why the PostgreSQL server at ``url`` cannot be used, or None when it answers."""
    try:
        import psycopg  # noqa: F401  (the driver behind postgresql:// URLs)
    except ImportError:
        return "psycopg is not installed (pip install 'hpsearch[postgres]')"
    import sqlalchemy

    from hpsearch.storage.urls import mask_password, parse_storage_url

    engine = sqlalchemy.create_engine(parse_storage_url(url), connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.DBAPIError as error:
        return f"no PostgreSQL server at {mask_password(url)}: {str(error.orig).strip().splitlines()[0]}"
    finally:
        engine.dispose()
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in SLOW_MODULES)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a new, empty database on the PostgreSQL server, dropped after the session.

    Skips (fails under ``$CI``) when no server answers.
    """
    problem = _postgres_problem(POSTGRES_ADMIN_URL)
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {problem}")
        pytest.skip(problem)
    with new_postgres_database("hpsearch_test") as url:
        yield url


@pytest.fixture
def empty_postgres_database(postgres_server: str) -> Iterator[str]:
    """A new database with no tables at all, as a job array's workers find on their first start."""
    with new_postgres_database("hpsearch_race") as url:
        yield url


@contextmanager
def new_postgres_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty database on the PostgreSQL server (no tables at all), dropped after."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    from hpsearch.storage.urls import parse_storage_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    # CREATE and DROP DATABASE refuse to run inside a transaction.
    admin = sqlalchemy.create_engine(parse_storage_url(POSTGRES_ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            # Workers a test started, or engines it did not dispose, would make DROP DATABASE fail.
            connection.execute(
                sqlalchemy.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def study_name(request: pytest.FixtureRequest) -> str:
    """A study name unique to this test run, readable in the database: ``test-<test>-<random>``."""
    test = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:40].strip("-")
    return f"test-{test}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A SQLite storage URL for a file in this test's tmp_path."""
    return f"sqlite:///{tmp_path / 'hpsearch.db'}"


@pytest.fixture
def postgres_url(postgres_server: str, study_name: str) -> Iterator[str]:
    """The PostgreSQL URL; afterwards every study whose name starts with ``study_name`` is deleted."""
    yield postgres_server
    import optuna

    from hpsearch.storage.database import StudyDatabase
    from hpsearch.storage.epoch_metrics import delete_study

    storage = StudyDatabase.open_for_search(postgres_server).storage
    try:
        names = [name for name in optuna.get_all_study_names(storage) if name.startswith(study_name)]
    finally:
        storage.engine.dispose()
    for name in names:
        delete_study(postgres_server, name)


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest) -> str:
    """The test runs once on a SQLite file and once on the PostgreSQL server."""
    return request.getfixturevalue(f"{request.param}_url")


YAHPO_DATA = Path(os.environ.get("HPSEARCH_YAHPO_DATA") or Path(__file__).resolve().parents[2] / "shared" / "yahpo_data")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket's name, with the AWS_* variables pointing at the server."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    bucket = f"hpsearch-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    return bucket


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "small-disk")
    yield disk
    disk.unmount()


@pytest.fixture(scope="session")
def yahpo_data() -> Path:
    if not YAHPO_DATA.is_dir():
        reason = f"no YAHPO data folder at {YAHPO_DATA} (set HPSEARCH_YAHPO_DATA to one holding lcbench/)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but there is {reason}")
        pytest.skip(reason)
    return YAHPO_DATA
