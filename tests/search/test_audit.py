"""``audit_epochs`` after an incident: a damaged checkpoint is reported, not raised."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch.search import search
from hpsearch.search.audit import audit_epochs
from hpsearch.search.trial import checkpoint_dir
from hpsearch.storage.urls import StorageURLError


def test_an_unreadable_checkpoint_is_reported_and_the_rest_audited(tmp_path: Path, run_hpsearch) -> None:
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    study = search("tfn_classifier", "synthetic_tokens", {"embed_dim": [8, 16]}, study_name="audited", storage=url,
                   output_dir=str(tmp_path), task_options={"dataset_size": 64}, epochs=2, precision="fp32")
    assert len(study.trials) == 2
    clean = audit_epochs(url, "audited", str(tmp_path))
    assert (clean.finished, clean.trained_twice, clean.lost, clean.running, clean.unreadable) == (2, 0, 0, 0, ())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # From another folder: the checkpoints are found where the study put them (its --output-dir).
    command = run_hpsearch("audit", "--study", "audited", "--storage", url, cwd=elsewhere)
    assert command.returncode == 0, command.stderr
    assert "epochs trained twice:   0" in command.stdout and "unreadable checkpoints: 0" in command.stdout

    damaged = checkpoint_dir(str(tmp_path), "audited", 0) / "last.pt"
    damaged.write_bytes(damaged.read_bytes()[:100])  # what a kill mid-write on a filesystem without atomic renames leaves
    audit = audit_epochs(url, "audited", str(tmp_path))

    assert len(audit.unreadable) == 1 and audit.unreadable[0].startswith(f"trial 0: {damaged}: "), audit.unreadable
    assert (audit.finished, audit.trained_twice, audit.lost, audit.running) == (2, 0, 0, 0)
    command = run_hpsearch("audit", "--study", "audited", "--storage", url)
    assert command.returncode == 1, command.stderr  # something to look into: scripts can tell
    assert "unreadable checkpoints: 1" in command.stdout and f"trial 0: {damaged}: " in command.stdout
    # Pointed at a folder without the checkpoints, it says what it could not find rather than passing.
    nowhere = run_hpsearch("audit", "--study", "audited", "--storage", url, "--output-dir", str(elsewhere))
    assert nowhere.returncode == 1 and "missing checkpoints:    2" in nowhere.stdout, nowhere.stdout
    assert f"trial 1: stored 2 epochs, and {checkpoint_dir(str(elsewhere), 'audited', 1) / 'last.pt'} does not exist" in nowhere.stdout
    unknown = run_hpsearch("audit", "--study", "audit", "--storage", url)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1, unknown.stderr
    assert "no study named 'audit'" in unknown.stderr and "audited" in unknown.stderr


def test_a_proxys_url_is_refused_in_one_line_that_names_the_database_url() -> None:
    # Workers behind a proxy were given its grpc:// URL; the audit reads the epoch table, which only the database has.
    with pytest.raises(StorageURLError, match="is an hpsearch proxy: .* pass its sqlite:/// or postgresql:// URL"):
        audit_epochs("grpc://127.0.0.1:13000", "s", ".")


def test_a_study_that_keeps_no_last_checkpoint_is_not_called_clean(tmp_path: Path, run_hpsearch) -> None:
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    search("tfn_classifier", "synthetic_tokens", {"embed_dim": [8]}, study_name="best-only", storage=url,
           output_dir=str(tmp_path), task_options={"dataset_size": 64}, epochs=2, precision="fp32", checkpoints="best")
    audit = audit_epochs(url, "best-only")
    assert not audit.counted and not audit.clean and audit.missing == ()
    command = run_hpsearch("audit", "--study", "best-only", "--storage", url)
    assert command.returncode == 1 and "epochs trained twice:   not counted: the study keeps no last.pt" in command.stdout
