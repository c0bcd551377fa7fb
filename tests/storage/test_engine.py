"""QueuedRDBStorage.set_trial_user_attrs on a real SQLite file and the real PostgreSQL server."""

from __future__ import annotations

import math

import optuna
import pytest

from hpsearch.storage.engine import open_optuna_storage

ATTRS = {
    "epochs_run": 3,
    "lr_history": [1e-4, 5e-4, 1e-3],
    "precision": "bf16",
    "flops.total": 1.5e12,
    "resumed_from": {"checkpoint": "/tmp/x/last.pt", "epoch": 2},
    "missing": None,
}


def test_set_trial_user_attrs_stores_what_set_user_attr_stores(storage_url: str, study_name: str) -> None:
    storage = open_optuna_storage(storage_url)
    study = optuna.create_study(study_name=study_name, storage=storage)
    one_by_one, batched = study.ask(), study.ask()
    for key, value in ATTRS.items():
        one_by_one.set_user_attr(key, value)
    storage.set_trial_user_attrs(batched._trial_id, ATTRS)

    assert storage.get_trial(batched._trial_id).user_attrs == storage.get_trial(one_by_one._trial_id).user_attrs
    assert storage.get_trial(batched._trial_id).user_attrs == ATTRS
    storage.engine.dispose()


def test_set_trial_user_attrs_replaces_existing_keys_and_keeps_others(sqlite_url: str, study_name: str) -> None:
    storage = open_optuna_storage(sqlite_url)
    trial = optuna.create_study(study_name=study_name, storage=storage).ask()
    trial.set_user_attr("epochs_run", 1)
    trial.set_user_attr("lr_finder.suggested", 0.01)

    storage.set_trial_user_attrs(trial._trial_id, {"epochs_run": 4, "prune_reason": "diverged: loss=nan"})

    assert storage.get_trial(trial._trial_id).user_attrs == {
        "epochs_run": 4,
        "lr_finder.suggested": 0.01,
        "prune_reason": "diverged: loss=nan",
    }
    storage.engine.dispose()


def test_set_trial_user_attrs_refuses_a_finished_trial_and_writes_nothing(sqlite_url: str, study_name: str) -> None:
    storage = open_optuna_storage(sqlite_url)
    study = optuna.create_study(study_name=study_name, storage=storage)
    trial = study.ask()
    study.tell(trial, 0.5)

    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_user_attrs(trial._trial_id, {"epochs_run": 9})

    assert storage.get_trial(trial._trial_id).user_attrs == {}
    assert math.isclose(storage.get_trial(trial._trial_id).value, 0.5)
    storage.engine.dispose()
