"""hpsearch_epoch_metrics on a real SQLite file and the real PostgreSQL server."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest
import sqlalchemy as sa

from hpsearch.storage import trial_id
from hpsearch.storage.database import StudyDatabase
from hpsearch.storage.epoch_metrics import TABLE_NAME, EpochMetricsTable, delete_study, has_table
from hpsearch.trainers.records import EpochRecord

optuna.logging.set_verbosity(optuna.logging.ERROR)
EPOCHS = 3
# x -> losses x*1, x*2, x*3 against ThresholdPruner(upper=4): 0.5 and 1 run all three epochs,
# 1.5 is pruned after epoch 3, 3 after epoch 2, 5 after epoch 1; 2 fails during epoch 2.
POINTS = [0.5, 1.0, 1.5, 3.0, 5.0, 2.0]
FAILS_AT = {2.0: 2}


def record(epoch: int, loss: float, **metrics: float) -> EpochRecord:
    return EpochRecord(
        epoch=epoch, lr=1e-3 / epoch, train_loss=loss * 1.1, val_loss=loss, metrics=metrics or {"val_acc": 1 / (1 + loss)},
        grad_norm_mean=0.5, grad_norm_max=2.0, nonfinite_steps=epoch - 1, clipped_steps=1,
        epoch_seconds=0.25, samples_per_second=800.0, peak_memory_bytes=123 << 20,
    )


def run_study(url: str, name: str) -> tuple[optuna.Study, list[tuple[int, int]]]:
    """Optimize like the orchestrator does: write the row, report, ask the pruner, every epoch."""
    study = optuna.create_study(
        study_name=name, storage=StudyDatabase.open_for_search(url).storage, pruner=optuna.pruners.ThresholdPruner(upper=4.0)
    )
    for x in POINTS:
        study.enqueue_trial({"x": x})
    written: list[tuple[int, int]] = []
    table = EpochMetricsTable(url)
    reader = EpochMetricsTable(url)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 10)
        for epoch in range(1, EPOCHS + 1):
            if FAILS_AT.get(x) == epoch:
                raise RuntimeError("diverged")
            table.write(trial_id(trial), record(epoch, x * epoch).as_row())
            written.append((trial.number, epoch))
            # Committed per epoch: another connection sees the row before the trial ends.
            seen = reader.frame(name)
            assert ((seen["number"] == trial.number) & (seen["epoch"] == epoch)).sum() == 1
            trial.report(x * epoch, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x * EPOCHS

    try:
        study.optimize(objective, n_trials=len(POINTS), catch=(RuntimeError,))
    finally:
        table.close()
        reader.close()
    return study, written


def test_one_row_per_finished_epoch_of_every_trial(storage_url, study_name):
    study, written = run_study(storage_url, study_name)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED", "PRUNED", "FAIL"]

    with EpochMetricsTable(storage_url) as table:
        frame = table.frame(study_name)
        assert table.frame(study).equals(frame)  # the Study a user holds, as the README's .frame(study) read
    rows = list(zip(frame["number"], frame["epoch"]))
    assert len(rows) == len(set(rows)) == len(written) == 3 + 3 + 3 + 2 + 1 + 1
    assert sorted(rows) == sorted(written)
    for trial in study.trials:  # every reported step has its row and no other row exists
        assert sorted(frame.loc[frame["number"] == trial.number, "epoch"]) == sorted(trial.intermediate_values)
    pruned = frame[frame["number"] == 3]  # x=3: pruned after epoch 2
    assert list(pruned["epoch"]) == [1, 2] and list(pruned["val_loss"]) == [3.0, 6.0]
    assert list(frame["trial_id"].unique()) == [trial_id(t) for t in study.trials]


def test_row_holds_every_field_of_the_record(storage_url, study_name):
    study = optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(storage_url).storage)
    trial = study.ask()
    expected = record(2, 0.75).as_row()
    with EpochMetricsTable(storage_url) as table:
        table.write(trial_id(trial), expected)
        frame = table.frame(study_name)
    assert len(frame) == 1
    row = frame.iloc[0].to_dict()
    assert row.pop("trial_id") == trial_id(trial) and row.pop("number") == 0
    assert row == pytest.approx(expected, nan_ok=True)
    assert list(frame.columns[:7]) == ["trial_id", "number", "epoch", "lr", "train_loss", "val_loss", "val_acc"]


def test_rewriting_an_epoch_replaces_it(storage_url, study_name):
    study = optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(storage_url).storage)
    trial = study.ask()
    with EpochMetricsTable(storage_url) as table:
        table.write(trial_id(trial), record(1, 2.0).as_row())
        table.write(trial_id(trial), record(2, 1.5).as_row())
        table.write(trial_id(trial), record(1, 0.5, val_acc=0.9).as_row())  # a resumed trial
        frame = table.frame(study_name)
    assert list(frame["epoch"]) == [1, 2]
    assert list(frame["val_loss"]) == [0.5, 1.5]
    assert list(frame["val_acc"]) == [0.9, pytest.approx(1 / 2.5)]


def test_tasks_with_different_metrics_share_the_table(storage_url, study_name):
    engine = StudyDatabase.open_for_search(storage_url).engine
    study = optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(storage_url).storage)
    classification, regression = study.ask(), study.ask()
    with EpochMetricsTable(storage_url) as table:
        columns_before = {c["name"] for c in sa.inspect(engine).get_columns(TABLE_NAME)}
        table.write(trial_id(classification), record(1, 1.0, val_acc=0.8).as_row())
        table.write(trial_id(regression), record(1, 1.0, val_mse=0.25, val_mae=0.4).as_row())
        frame = table.frame(study_name)
    assert {c["name"] for c in sa.inspect(engine).get_columns(TABLE_NAME)} == columns_before  # no ALTER TABLE
    engine.dispose()
    assert list(frame.columns[5:9]) == ["val_loss", "val_acc", "val_mae", "val_mse"]
    assert frame.loc[0, "val_acc"] == 0.8 and math.isnan(frame.loc[0, "val_mse"])
    assert frame.loc[1, "val_mse"] == 0.25 and frame.loc[1, "val_mae"] == 0.4 and math.isnan(frame.loc[1, "val_acc"])


def test_non_finite_values_read_back(storage_url, study_name):
    study = optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(storage_url).storage)
    trial = study.ask()
    diverged = EpochRecord(epoch=1, lr=0.1, train_loss=math.inf, val_loss=math.nan, metrics={"val_acc": math.nan})
    with EpochMetricsTable(storage_url) as table:
        table.write(trial_id(trial), diverged.as_row())
        row = table.frame(study_name).iloc[0]
    assert row["train_loss"] == math.inf
    assert math.isnan(row["val_loss"]) and math.isnan(row["val_acc"]) and math.isnan(row["grad_norm_mean"])


def test_bad_rows_are_refused(sqlite_url):
    with EpochMetricsTable(sqlite_url) as table:
        with pytest.raises(ValueError, match="'epoch'"):
            table.write(1, {"lr": 0.1})
        with pytest.raises(ValueError, match="'number'"):
            table.write(1, {"epoch": 1, "number": 3.0})


def test_creating_the_table_at_once_from_many_connections(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    start = threading.Barrier(6)

    def open_and_write(worker: int) -> None:
        start.wait()
        with EpochMetricsTable(url) as table:
            table.write(worker, record(1, 1.0).as_row())

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(open_and_write, range(6)))  # re-raises any worker's error
    engine = StudyDatabase.open_for_search(url).engine
    with engine.connect() as connection:
        assert connection.execute(sa.text(f"SELECT COUNT(*) FROM {TABLE_NAME}")).scalar() == 6
    engine.dispose()


def test_table_is_created_on_demand_and_only_once(storage_url, study_name):
    engine = StudyDatabase.open_for_search(storage_url).engine
    with EpochMetricsTable(storage_url), EpochMetricsTable(storage_url):
        assert has_table(engine)
    engine.dispose()


def test_delete_study_removes_its_rows_only(storage_url, study_name):
    _, written = run_study(storage_url, study_name)
    kept = optuna.create_study(study_name=f"{study_name}-kept", storage=StudyDatabase.open_for_search(storage_url).storage)
    kept_trial = kept.ask()
    with EpochMetricsTable(storage_url) as table:
        table.write(trial_id(kept_trial), record(1, 1.0).as_row())
        table.write(trial_id(kept_trial), record(2, 0.5).as_row())
        assert len(table.frame(study_name)) == len(written)

    delete_study(storage_url, study_name)

    assert study_name not in optuna.get_all_study_names(StudyDatabase.open_for_search(storage_url).storage)
    with EpochMetricsTable(storage_url) as table:
        assert table.frame(study_name).empty
        assert len(table.frame(f"{study_name}-kept")) == 2
        assert table.delete_orphans() == 0  # delete_study took the study's rows with it
        assert table.delete_trials([trial_id(kept_trial)]) == 2
        assert table.frame(f"{study_name}-kept").empty


@pytest.mark.parametrize("created", ["asked", "queued"])
def test_a_trial_given_a_deleted_trials_id_starts_with_no_rows(sqlite_url, study_name, created):
    # Optuna's delete_study (the dashboard's delete button) leaves the epoch rows, and SQLite gives
    # the deleted study's last trial id to the next trial: it showed the deleted trial's epochs 2 and 3.
    database = StudyDatabase.open_for_search(sqlite_url)
    old = optuna.create_study(study_name=study_name, storage=database.storage).ask()
    with EpochMetricsTable(database) as table:
        for epoch in (1, 2, 3):
            table.write(trial_id(old), record(epoch, 1.0).as_row())
    optuna.delete_study(study_name=study_name, storage=database.storage)

    study = optuna.create_study(study_name=f"{study_name}-new", storage=database.storage)
    if created == "queued":
        database.storage.create_waiting_trials(study._study_id, [{"x": 1.0}])
        new = study.ask()
    else:
        new = study.ask()
    assert trial_id(new) == trial_id(old)  # the reuse this guards against
    with EpochMetricsTable(database) as table:
        assert table.frame(f"{study_name}-new").empty
        table.write(trial_id(new), record(1, 0.5).as_row())
        assert list(table.frame(f"{study_name}-new")["epoch"]) == [1]
    database.close()
