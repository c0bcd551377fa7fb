"""A damaged SQLite file: every command says so in one line and exits 2, and leaves the file as it was.

The study database is made by a real (tiny) search; the commands run as real processes.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from tests.search.conftest import hpsearch_command

STUDY = "damaged"


@pytest.fixture(scope="module")
def study_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study database written by ``hpsearch``, one trial in it, its WAL folded into the file."""
    folder = tmp_path_factory.mktemp("search")
    result = subprocess.run(
        [*hpsearch_command(), "--models", "tfn_classifier", "--param_sweep", "embed_dim:16", "--epochs", "1",
         "--dataset-size", "100", "--no-progress", "--study-name", STUDY],
        cwd=folder, env=_environment(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    path = folder / "hpsearch.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}


def _garbage(length: int) -> bytes:
    return random.Random(length).randbytes(length)


def _damage(study_file: Path, damage: str, into: Path) -> Path:
    """A copy of the study file in ``into``, damaged as ``damage`` says."""
    path = into / "hpsearch.db"
    data = bytearray(study_file.read_bytes())
    with closing(sqlite3.connect(f"file:{study_file}?mode=ro", uri=True)) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    if damage == "random bytes":
        data = bytearray(_garbage(8192))
    else:  # the header and the schema's first page intact, every other page garbage
        data[page_size:] = _garbage(len(data) - page_size)
    path.write_bytes(bytes(data))
    return path


COMMANDS = {
    "studies": ["studies"],
    "trials": ["trials", "--study", STUDY],
    "export": ["export", "--study", STUDY, "--out", "exported"],
    "worker": ["worker", "--study", STUDY],
    "search": ["--models", "tfn_classifier", "--param_sweep", "embed_dim:16", "--epochs", "1", "--dataset-size", "100",
               "--no-progress", "--study-name", STUDY],
}


# A page damaged half-way through what a command reads: tests/search/test_tables_cli.py for the
# commands that read, tests/storage/test_engine.py for the check the search and workers run.
@pytest.mark.parametrize("damage", ["random bytes", "pages 2 on"])
def test_every_command_says_the_file_is_damaged_in_one_line(damage: str, study_file: Path, tmp_path: Path) -> None:
    folders = {name: tmp_path / name for name in COMMANDS}
    for folder in folders.values():
        folder.mkdir()
    damaged = _damage(study_file, damage, tmp_path)
    for folder in folders.values():
        shutil.copyfile(damaged, folder / "hpsearch.db")
    # The five start together: each pays seconds of imports, and the two cores share them.
    running = {
        name: subprocess.Popen(
            [*hpsearch_command(), *args, "--storage", f"sqlite:///{folders[name] / 'hpsearch.db'}"],
            cwd=folders[name], env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name, args in COMMANDS.items()
    }
    outputs = {name: process.communicate(timeout=300) for name, process in running.items()}

    for name, (out, err) in outputs.items():
        path = folders[name] / "hpsearch.db"
        assert running[name].returncode == 2, f"{name}: {out}{err}"
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out + err, f"{name}: {err}"
        assert lines[0].startswith(f"hpsearch: error: cannot open storage sqlite:///{path}: "), f"{name}: {err}"
        if damage == "random bytes":  # no SQLite header: most likely the wrong file, which the line says first
            assert "the file is not a SQLite database (it does not begin as one)" in lines[0], f"{name}: {err}"
        else:
            assert "the file is damaged or is not a SQLite database" in lines[0], f"{name}: {err}"
        # Nothing written: no journal, no checkpoint, no export, and the damaged bytes as they were.
        assert sorted(p.name for p in folders[name].iterdir()) == ["hpsearch.db"], name
        assert path.read_bytes() == damaged.read_bytes(), name
