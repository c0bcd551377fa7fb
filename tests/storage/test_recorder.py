"""The database recorder: epoch rows and reports of a trial, written again without noise."""

from __future__ import annotations

import warnings

import optuna
import pytest

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


def test_closing_a_trial_a_peer_has_failed_is_refused_and_stores_nothing(tmp_path):
    # After an outage longer than the grace period a peer may have failed the trial; its retry records it.
    database = StudyDatabase.open_for_search(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=2)
    try:
        study = optuna.create_study(study_name="s", storage=database.storage)
        study.enqueue_trial({})
        trial = study.ask()
        recorder = DatabaseRecorder(database.storage, database.epoch_table)
        assert recorder.close(trial, {"epochs_run": 1}) is None
        assert study.trials[0].user_attrs == {"epochs_run": 1}
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # what the peer's stale check does
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            recorder.close(trial, {"epochs_run": 2})
        assert study.trials[0].user_attrs == {"epochs_run": 1}
    finally:
        database.close()
