"""``StudyDatabase``: the two openers, one engine, and the storage errors they raise."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from hpsearch.storage.database import StudyDatabase, reading
from hpsearch.storage.engine import DamagedDatabaseError
from hpsearch.storage.errors import StorageError, StorageOpenError
from hpsearch.storage.reading import StorageReadError, UnknownStudyError


def _study(url: str, name: str) -> None:
    with StudyDatabase.open_for_search(url) as database:
        study = optuna.create_study(study_name=name, storage=database.storage)
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)


def test_a_reader_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    with pytest.raises(StorageReadError, match="no database file"):
        StudyDatabase.open_for_reading(f"sqlite:///{missing}")
    assert not missing.exists()

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE unrelated (x)").connection.close()
    with pytest.raises(StorageReadError, match="holds no Optuna studies"):
        StudyDatabase.open_for_reading(f"sqlite:///{other}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"], "no journal, no WAL files"


def test_one_engine_serves_the_storage_the_epoch_table_and_the_reads(storage_url: str, study_name: str) -> None:
    _study(storage_url, study_name)
    with StudyDatabase.open_for_reading(storage_url) as database:
        assert database.epoch_table._engine is database.engine is database.storage.engine
        assert database.find_study(study_name).name == study_name
        assert len(database.load_study(study_name).trials) == 2
        with reading(database) as same:
            assert same is database, "an open database is used as it is, not opened again"
        with pytest.raises(UnknownStudyError, match=f"no study named 'nope'.*{study_name}"):
            database.load_study("nope")
    # Opened to run trials in (a worker's), the line lists the studies there too.
    database = StudyDatabase.open_for_search(storage_url)
    try:
        with pytest.raises(UnknownStudyError, match=f"no study named 'nope'.*studies there: .*{study_name}"):
            database.load_study("nope")
    finally:
        database.close()


def test_a_worker_opener_does_not_make_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(StorageOpenError, match="no study database at"):
        StudyDatabase.open_for_search(f"sqlite:///{path}", create=False)
    assert not path.exists()


def test_an_unreachable_server_is_one_line_with_the_password_masked() -> None:
    # Nothing listens on port 9 of this machine: the connection is refused at once.
    url = "postgresql://alice:s3cret-pw@127.0.0.1:9/db"
    for opener in (StudyDatabase.open_for_search, StudyDatabase.open_for_reading):
        with pytest.raises(StorageError) as error:
            opener(url)
        message = str(error.value)
        assert "\n" not in message and "s3cret-pw" not in message and "alice:***@127.0.0.1:9" in message


def test_damage_met_while_reading_is_a_damaged_database_error(sqlite_url: str, study_name: str) -> None:
    _study(sqlite_url, study_name)
    with pytest.raises(DamagedDatabaseError, match="damaged or is not a SQLite database"), StudyDatabase.open_for_reading(sqlite_url):
        raise sqlalchemy.exc.DatabaseError("SELECT 1", None, _malformed())


def _malformed() -> sqlite3.DatabaseError:
    error = sqlite3.DatabaseError("database disk image is malformed")
    error.sqlite_errorcode = 11  # SQLITE_CORRUPT
    return error


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_workers_opening_a_new_database_at_once_all_get_in(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # Optuna creates its tables one by one; the losers of that race used to stop with a
    # UniqueViolation traceback (PostgreSQL) or "table studies already exists" (SQLite).
    url = f"sqlite:///{tmp_path / 'new.db'}" if backend == "sqlite" else request.getfixturevalue("empty_postgres_database")
    start = threading.Barrier(6)

    def open_at_once(worker: int) -> int:
        start.wait()
        with StudyDatabase.open_for_search(url) as database:
            return len(optuna.get_all_study_names(database.storage))

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(open_at_once, range(6))) == [0] * 6  # re-raises any worker's error


def test_the_queue_lock_says_whether_another_process_held_it(storage_url: str, study_name: str) -> None:
    # Two databases opened apart hold the lock as two processes do (a connection each).
    first, second = StudyDatabase.open_for_search(storage_url), StudyDatabase.open_for_search(storage_url)
    try:
        with second.queue_lock(study_name) as waited:
            assert waited is False, "nobody held it"
            with second.queue_lock(study_name) as again:
                assert again is False, "its own holder takes it again without waiting"
        entered = threading.Event()
        answer: list[bool] = []

        def take_second() -> None:
            entered.set()
            with second.queue_lock(study_name) as waited:
                answer.append(waited)

        with first.queue_lock(study_name):
            taker = threading.Thread(target=take_second)
            taker.start()
            entered.wait()
            taker.join(0.5)
            assert taker.is_alive() and not answer, "the second must wait while the first holds the lock"
        taker.join(10)
        assert answer == [True], "a lock taken after waiting for another holder says so"
    finally:
        first.close()
        second.close()
