"""The database recorder: epoch rows and reports of a trial, written again without noise."""

from __future__ import annotations

import warnings

import optuna

from hpsearch.storage.database import StudyDatabase
from hpsearch.storage.recorder import DatabaseRecorder


def test_an_epoch_written_again_keeps_the_first_report_without_a_warning(tmp_path):
    # What a heartbeat retry does when it trains again the epochs its killed predecessor reported
    # (and inherited) but never stored in the artifact store, and what a retried half-stored write does.
    database = StudyDatabase.open_for_search(f"sqlite:///{tmp_path / 'study.db'}")
    try:
        study = optuna.create_study(study_name="s", storage=database.storage)
        trial = study.ask()
        recorder = DatabaseRecorder(database.storage, database.epoch_table)
        recorder.write_epoch(trial, 1, {"epoch": 1, "val_loss": 0.5}, 0.5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            recorder.write_epoch(trial, 1, {"epoch": 1, "val_loss": 0.5}, 0.5)
        assert [str(w.message) for w in caught] == []
        assert recorder.frozen(trial).intermediate_values == {1: 0.5}
        assert len(database.epoch_table.frame("s")) == 1
    finally:
        database.close()
