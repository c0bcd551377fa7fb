"""QueuedRDBStorage.set_trial_user_attrs on a real SQLite file and the real PostgreSQL server;
damaged SQLite files, found before anything is written."""

from __future__ import annotations

import math
import random
import sqlite3
from contextlib import closing
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from hpsearch.storage import trial_id
from hpsearch.storage.database import StudyDatabase
from hpsearch.storage.engine import (
    DamagedDatabaseError,
    damaged_sqlite_errors,
    prepare_sqlite,
    sqlite_damage,
)
from hpsearch.storage.errors import StorageOpenError
from hpsearch.storage.urls import StorageURLError, parse_storage_url

ATTRS = {
    "epochs_run": 3,
    "lr_history": [1e-4, 5e-4, 1e-3],
    "precision": "bf16",
    "flops.total": 1.5e12,
    "resumed_from": {"checkpoint": "/tmp/x/last.pt", "epoch": 2},
    "missing": None,
}


def test_set_trial_user_attrs_stores_what_set_user_attr_stores(storage_url: str, study_name: str) -> None:
    storage = StudyDatabase.open_for_search(storage_url).storage
    study = optuna.create_study(study_name=study_name, storage=storage)
    one_by_one, batched = study.ask(), study.ask()
    for key, value in ATTRS.items():
        one_by_one.set_user_attr(key, value)
    storage.set_trial_user_attrs(trial_id(batched), ATTRS)

    assert storage.get_trial(trial_id(batched)).user_attrs == storage.get_trial(trial_id(one_by_one)).user_attrs
    assert storage.get_trial(trial_id(batched)).user_attrs == ATTRS
    storage.engine.dispose()


def test_set_trial_user_attrs_replaces_existing_keys_and_keeps_others(sqlite_url: str, study_name: str) -> None:
    storage = StudyDatabase.open_for_search(sqlite_url).storage
    trial = optuna.create_study(study_name=study_name, storage=storage).ask()
    trial.set_user_attr("epochs_run", 1)
    trial.set_user_attr("lr_finder.suggested", 0.01)

    storage.set_trial_user_attrs(trial_id(trial), {"epochs_run": 4, "prune_reason": "diverged: loss=nan"})

    assert storage.get_trial(trial_id(trial)).user_attrs == {
        "epochs_run": 4,
        "lr_finder.suggested": 0.01,
        "prune_reason": "diverged: loss=nan",
    }
    storage.engine.dispose()


def test_set_trial_user_attrs_refuses_a_finished_trial_and_writes_nothing(sqlite_url: str, study_name: str) -> None:
    storage = StudyDatabase.open_for_search(sqlite_url).storage
    study = optuna.create_study(study_name=study_name, storage=storage)
    trial = study.ask()
    study.tell(trial, 0.5)

    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_user_attrs(trial_id(trial), {"epochs_run": 9})

    assert storage.get_trial(trial_id(trial)).user_attrs == {}
    assert math.isclose(storage.get_trial(trial_id(trial)).value, 0.5)
    storage.engine.dispose()


def _study_file(sqlite_url: str, study_name: str) -> Path:
    """A real study database with a few finished trials, its WAL folded back into the file."""
    storage = StudyDatabase.open_for_search(sqlite_url).storage
    study = optuna.create_study(study_name=study_name, storage=storage)
    for value in (0.3, 0.2, 0.1):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), value)
    storage.engine.dispose()
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _overwrite(path: Path, offset: int, length: int) -> bytes:
    """Overwrite ``length`` bytes of ``path`` at ``offset`` with seeded garbage; the file's new bytes."""
    data = bytearray(path.read_bytes())
    data[offset : offset + length] = random.Random(offset).randbytes(min(length, len(data) - offset))
    path.write_bytes(bytes(data))
    return bytes(data)


def _table_page(path: Path, table: str) -> tuple[int, int]:
    """Offset and size of the first page of ``table`` in the file."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        root = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    return (root - 1) * page_size, page_size


@pytest.mark.parametrize("damage", ["header", "trials table"])
def test_a_damaged_file_is_one_clear_error_and_is_left_as_it_was(damage: str, sqlite_url: str, study_name: str) -> None:
    path = _study_file(sqlite_url, study_name)
    if damage == "header":
        damaged = _overwrite(path, 0, 16)
    else:
        # Only the trials table's page: the schema on page 1 still reads, so the damage shows
        # only when something reads the trials, which quick_check does before anything is written.
        damaged = _overwrite(path, *_table_page(path, "trials"))

    with pytest.raises(DamagedDatabaseError) as error:
        StudyDatabase.open_for_search(sqlite_url)

    line = str(error.value)
    assert "\n" not in line and line.startswith(f"cannot open storage {sqlite_url}: ")
    assert "not a SQLite database" in line and "restore" in line
    # Callers that report an unusable database, or a storage URL that cannot be used, catch it.
    assert isinstance(error.value, StorageURLError) and isinstance(error.value, sqlalchemy.exc.OperationalError)
    assert str(error.value.orig) in line
    assert path.read_bytes() == damaged
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.mark.parametrize("content", [random.Random(0).randbytes(8192), b"import torch\n" * 100], ids=["random", "script"])
def test_a_file_of_another_kind_is_not_a_database_and_says_so_first(content: bytes, tmp_path: Path) -> None:
    """--storage sqlite:///model.py said the file was damaged and to restore it from a backup."""
    path = tmp_path / "other.db"
    path.write_bytes(content)
    with pytest.raises(DamagedDatabaseError, match=r"the file is not a SQLite database \(it does not begin as one\); pass --storage"):
        prepare_sqlite(parse_storage_url(f"sqlite:///{path}"), f"sqlite:///{path}")
    assert path.read_bytes() == content


def test_damage_found_behind_optuna_and_sqlalchemy_errors(sqlite_url: str, study_name: str) -> None:
    path = _study_file(sqlite_url, study_name)
    _overwrite(path, *_table_page(path, "trials"))
    # The schema reads, so Optuna opens the storage; the damage shows when it reads the trials.
    storage = optuna.storages.RDBStorage(sqlite_url, skip_table_creation=True)
    try:
        with pytest.raises(Exception) as raised:
            optuna.load_study(study_name=study_name, storage=storage).get_trials()
        assert not isinstance(raised.value, sqlite3.DatabaseError)
        assert sqlite_damage(raised.value) is not None
        with pytest.raises(DamagedDatabaseError), damaged_sqlite_errors(sqlite_url):
            optuna.load_study(study_name=study_name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()
    assert sqlite_damage(ValueError("database disk image is malformed")) is None


def test_a_sqlite_file_that_cannot_be_opened_is_one_storage_open_error(tmp_path: Path) -> None:
    # Raw sqlite3 errors would escape the CLI's handler of storage errors, which prints one line.
    url = f"sqlite:///{tmp_path / 'no such folder' / 'x.db'}"
    with pytest.raises(StorageOpenError, match="unable to open database file") as error:
        StudyDatabase.open_for_search(url)
    folder = tmp_path / "no such folder"
    assert str(error.value) == (
        f"cannot open storage {url}: unable to open database file (no folder {folder}: create it, or pass another --storage)"
    )
    assert not isinstance(error.value, DamagedDatabaseError)


def test_a_healthy_file_opens_after_the_check(sqlite_url: str, study_name: str) -> None:
    _study_file(sqlite_url, study_name)
    storage = StudyDatabase.open_for_search(sqlite_url).storage
    assert [t.value for t in optuna.load_study(study_name=study_name, storage=storage).trials] == [0.3, 0.2, 0.1]
    storage.engine.dispose()
