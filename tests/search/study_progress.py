"""Watching a study that worker subprocesses are running: epochs stored so far, and waiting for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa


def epochs_stored(url: str, study: str) -> int:
    """The epoch rows of ``study``'s trials (a database may hold other studies' rows); 0 before the first epoch."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sa.text("SELECT count(*) FROM hpsearch_epoch_metrics m JOIN trials t ON t.trial_id = m.trial_id "
                        "JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = :study"),
                {"study": study},
            ).scalar()
    except sa.exc.ProgrammingError:
        return 0  # PostgreSQL: the table does not exist before the first epoch
    except sa.exc.OperationalError as error:
        if "no such table" in str(error):
            return 0  # SQLite: the same
        raise
    finally:
        engine.dispose()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Whether ``condition()`` came true within ``timeout`` seconds, asking every ``interval``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False
