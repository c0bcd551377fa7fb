"""A study's name is a name, not a path: checkpoints stay inside the output directory, one folder a study."""

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpsearch.search.trial import checkpoint_dir, study_folder
from tests.search.conftest import TINY

ONE_POINT = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:32", "--epochs", "1", *TINY[2:]]

READ_CHECKPOINTS = """
import json, sys, optuna
names = sys.argv[2:]
print(json.dumps({n: [t.user_attrs.get("checkpoint") for t in optuna.load_study(study_name=n, storage=sys.argv[1]).trials] for n in names}))
"""


@pytest.mark.parametrize("name", ["../x", "/etc/x", ".", "..", "./s", "a/b", "s" * 300, "x\n", "~", ""])
def test_every_name_is_one_path_component_inside_checkpoints(tmp_path, name):
    folder = study_folder(name)
    assert "/" not in folder and folder not in ("", ".", "..") and len(folder) <= 100
    place = checkpoint_dir(str(tmp_path), name, 0)
    assert place.parent.parent == (tmp_path / "checkpoints").resolve()


def test_plain_names_keep_their_folder_and_no_two_names_share_one():
    assert study_folder("tfn_classifier+cnn-synthetic_tokens") == "tfn_classifier+cnn-synthetic_tokens"
    names = ["s", "./s", "s/", "_s", ".s", "s~", "../s", "s" * 300, "s" * 301]
    assert len({study_folder(n) for n in names}) == len(names)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_hostile_study_names_write_nothing_outside_the_output_directory(tmp_path, run_hpsearch, backend, request):
    url = request.getfixturevalue(f"{backend}_url")
    names = ["../x", str(tmp_path / "abs"), ".", "..", "s", "./s", "n" * 300]
    try:
        for name in names:
            run = run_hpsearch(*ONE_POINT, "--storage", url, "--output-dir", "out", "--study-name", name)
            assert run.returncode == 0, (name, run.stderr)

        too_long = run_hpsearch(*ONE_POINT, "--storage", url, "--output-dir", "out", "--study-name", "m" * 10_000)
        assert too_long.returncode == 2
        assert too_long.stderr.strip().splitlines() == [
            "hpsearch: error: the study name is 10,000 characters; the study database stores at most 512"
        ]

        written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
        assert written <= {"out", "hpsearch.db", "hpsearch.db-wal", "hpsearch.db-shm", "hpsearch.db.queue-lock"}, written
        read = subprocess.run(
            [sys.executable, "-c", READ_CHECKPOINTS, url, *names], capture_output=True, text=True, check=True
        )
        checkpoints = json.loads(read.stdout)
        folders = set()
        for name in names:
            (saved,) = checkpoints[name]
            assert Path(saved).parent.parent.parent == (tmp_path / "out" / "checkpoints").resolve(), (name, saved)
            assert Path(saved).exists()
            folders.add(Path(saved).parent)
        assert len(folders) == len(names)  # s and ./s no longer share weights
    finally:
        if backend == "postgres":
            from hpsearch.storage.epoch_metrics import delete_study

            for name in names:
                with contextlib.suppress(Exception):  # a study an assertion stopped before creating
                    delete_study(url, name)
