"""Fixtures every test folder shares: study databases on a real SQLite file and on PostgreSQL.

``sqlite_url``      a SQLite URL in the test's tmp_path (the file does not exist yet).
``postgres_url``    the real PostgreSQL server (``$HPSEARCH_TEST_POSTGRES_URL``, default
                    postgresql://postgres@127.0.0.1:5432/test). Many test runs share that
                    database, so a test must name its studies with ``study_name`` (or names that
                    start with it); they are deleted afterwards, epoch rows included. Skipped
                    when no server answers, unless ``$CI`` is set: then that is a failure.
``storage_url``     parametrized over both backends (test ids ``sqlite`` and ``postgres``).
``study_name``      a name no other test or run uses.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_URL = os.environ.get("HPSEARCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


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


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of a PostgreSQL server that answers; skips (fails under ``$CI``) otherwise."""
    problem = _postgres_problem(POSTGRES_URL)
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {problem}")
        pytest.skip(problem)
    return POSTGRES_URL


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

    from hpsearch.storage.engine import open_optuna_storage
    from hpsearch.storage.epoch_metrics import delete_study

    storage = open_optuna_storage(postgres_server)
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
