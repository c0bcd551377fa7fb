"""Export to pandas and to files, against Optuna's own trials_dataframe(), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest

from hpsearch.storage import (
    EpochMetricsTable,
    ExportError,
    StorageReadError,
    StudyDatabase,
    UnknownStudyError,
    epochs_frame,
    export_study,
    study_summaries,
    trial_id,
    trials_frame,
)
from hpsearch.storage.epoch_metrics import has_table
from hpsearch.storage.export import file_ready
from hpsearch.trainers.records import EpochRecord

optuna.logging.set_verbosity(optuna.logging.ERROR)
KINDS = ["rbf", "compact", None, 7]  # categorical choices of several types, decoded from indices


def build_study(url: str, name: str, n_trials: int = 10) -> optuna.Study:
    """A study with every kind of trial an hpsearch run leaves, and a few it should survive.

    Float, int, log and categorical params (one only in some trials), enqueued points (system
    attrs), dotted and list-valued user attrs, pruned, failed, infinite and running trials.
    """
    study = optuna.create_study(
        study_name=name,
        storage=StudyDatabase.open_for_search(url).storage,
        sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.ThresholdPruner(upper=6.0),
    )
    study.enqueue_trial({"x": 1.0, "kind": "compact"})
    study.enqueue_trial({"x": 9.5, "kind": "rbf", "layers": 3})  # pruned at epoch 2
    study.enqueue_trial({"x": 9.2, "kind": "compact", "layers": 1})  # complete, value inf
    study.enqueue_trial({"x": 2.0, "kind": 7, "layers": 1})  # fails
    table = EpochMetricsTable(url)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.1, 10.0)
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        layers = trial.suggest_int("layers", 1, 3)
        kind = trial.suggest_categorical("kind", KINDS)
        if kind == "rbf":
            trial.suggest_categorical("bias", [True, False])
        history = []
        for epoch in range(1, layers + 1):
            loss = x * epoch / 2
            history.append(lr / epoch)
            metrics = {"val_acc": 1 / (1 + loss)} if trial.number % 2 else {"val_mse": loss, "val_mae": loss / 2}
            table.write(trial_id(trial), EpochRecord(epoch, lr / epoch, loss, loss, metrics).as_row())
            trial.report(loss, epoch)
            trial.set_user_attr("epochs_run", epoch)
            trial.set_user_attr("lr_history", history)
            if trial.should_prune():
                trial.set_user_attr("prune_reason", "threshold")
                raise optuna.TrialPruned()
        trial.set_user_attr("flops.total", 1e9 * layers)
        if kind == 7:
            raise RuntimeError("boom")
        return math.inf if x > 9 else x

    try:
        study.optimize(objective, n_trials=n_trials, catch=(RuntimeError,))
    finally:
        table.close()
    study.ask()  # one trial left running
    return study


def optuna_frame(url: str, name: str) -> pd.DataFrame:
    return optuna.load_study(study_name=name, storage=StudyDatabase.open_for_search(url).storage).trials_dataframe()


def test_trials_frame_equals_trials_dataframe(storage_url, study_name):
    study = build_study(storage_url, study_name)
    states = {t.state.name for t in study.trials}
    assert states == {"COMPLETE", "PRUNED", "FAIL", "RUNNING"}
    assert math.inf in [t.value for t in study.trials]

    frame = trials_frame(storage_url, study_name)

    pd.testing.assert_frame_equal(frame, optuna_frame(storage_url, study_name))
    assert {"params_kind", "params_bias", "user_attrs_flops.total", "user_attrs_lr_history", "system_attrs_fixed_params"} <= set(frame.columns)
    assert set(frame["params_kind"].dropna()) <= {"rbf", "compact", 7}  # choices, not their indices


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_multi_objective_with_metric_names_equals_trials_dataframe(storage_url, study_name):
    study = optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(storage_url).storage, directions=["minimize", "maximize"])
    study.set_metric_names(["val_loss", "val_acc"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_int("n", 1, 5) / 5), n_trials=5)

    frame = trials_frame(storage_url, study_name)

    assert list(frame.columns[:4]) == ["number", "values_val_loss", "values_val_acc", "pareto"]
    # The export adds one column Optuna lacks: membership of the Pareto front.
    study = optuna.load_study(study_name=study_name, storage=StudyDatabase.open_for_search(storage_url).storage)
    assert set(frame.loc[frame["pareto"], "number"]) == {t.number for t in study.best_trials}
    pd.testing.assert_frame_equal(frame.drop(columns="pareto"), optuna_frame(storage_url, study_name))


def test_study_without_trials_gives_empty_frames_and_files(sqlite_url, study_name, tmp_path):
    optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(sqlite_url).storage)

    assert trials_frame(sqlite_url, study_name).equals(optuna_frame(sqlite_url, study_name))
    assert epochs_frame(sqlite_url, study_name).empty
    summary = study_summaries(sqlite_url)
    assert summary.loc[0, "trials"] == 0 and math.isnan(summary.loc[0, "best_value"])
    trials_csv, epochs_csv = export_study(sqlite_url, study_name, "csv", tmp_path)
    assert list(pd.read_csv(trials_csv).columns) == ["number", "value", "datetime_start", "datetime_complete", "duration", "state"]
    assert pd.read_csv(epochs_csv).empty


def test_epochs_frame_is_long_with_params_joined(storage_url, study_name):
    study = build_study(storage_url, study_name)

    frame = epochs_frame(storage_url, study_name)

    expected = sorted((t.number, step) for t in study.trials for step in t.intermediate_values)
    assert list(zip(frame["number"], frame["epoch"])) == expected
    assert list(frame.columns[:7]) == ["number", "state", "epoch", "intermediate_value", "lr", "train_loss", "val_loss"]
    assert {"val_acc", "val_mae", "val_mse"} <= set(frame.columns)
    by_number = {t.number: t for t in study.trials}
    for row in frame.itertuples(index=False):
        trial = by_number[row.number]
        assert row.state == trial.state.name
        assert row.intermediate_value == trial.intermediate_values[row.epoch] == row.val_loss
        assert row.params_x == trial.params["x"] and row.params_layers == trial.params["layers"]
        assert row.params_kind == trial.params["kind"]
    assert "PRUNED" in set(frame["state"])


def test_epochs_frame_of_a_plain_optuna_study_reads_intermediate_values(sqlite_url, study_name):
    def objective(trial: optuna.Trial) -> float:
        for step in range(3):
            trial.report(step * 2.0, step)
        return trial.suggest_float("x", 0, 1)

    optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(sqlite_url).storage).optimize(objective, n_trials=2)

    frame = epochs_frame(sqlite_url, study_name)

    assert list(frame["epoch"]) == [0, 1, 2, 0, 1, 2]
    assert list(frame["intermediate_value"]) == [0.0, 2.0, 4.0] * 2
    assert frame["val_loss"].isna().all()
    engine = StudyDatabase.open_for_search(sqlite_url).engine
    assert not has_table(engine)  # reading created nothing
    engine.dispose()


def read_back(path: Path, fmt: str, columns: list[str]) -> pd.DataFrame:
    dates = [c for c in columns if c.startswith("datetime_")]
    if fmt == "csv":
        return pd.read_csv(path, parse_dates=dates)
    if fmt == "json":
        frame = pd.read_json(path, orient="records", dtype=False)
        for column in dates:
            frame[column] = pd.to_datetime(frame[column])
        return frame
    return pd.read_parquet(path)


@pytest.fixture(scope="module")
def built_sqlite(tmp_path_factory) -> tuple[str, str]:
    """One study that the read-only tests below share (URL, study name)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('built') / 'hpsearch.db'}"
    build_study(url, "built")
    return url, "built"


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_export_round_trips_through_pandas(built_sqlite, tmp_path, fmt):
    sqlite_url, study_name = built_sqlite
    out = tmp_path / "out" / "nested"

    paths = export_study(sqlite_url, study_name, fmt, out)

    assert paths == [out / f"trials.{fmt}", out / f"epochs.{fmt}"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no partial files left
    for path, frame in zip(paths, (trials_frame(sqlite_url, study_name), epochs_frame(sqlite_url, study_name))):
        expected = file_ready(frame)
        if fmt == "json":  # JSON has no infinity; the files hold null there
            expected = expected.replace([math.inf, -math.inf], None)
        back = read_back(path, fmt, list(expected.columns))
        assert list(back.columns) == list(frame.columns)
        assert len(back) == len(frame)
        pd.testing.assert_frame_equal(
            back.astype(object).where(back.notna(), None),
            expected.astype(object).where(expected.notna(), None),
            check_dtype=False,
        )
    trials = read_back(paths[0], fmt, [])
    assert json.loads(trials["user_attrs_lr_history"].dropna().iloc[0])[0] > 0  # lists are JSON text
    assert trials["duration"].dropna().iloc[0] == pytest.approx(frame_seconds(sqlite_url, study_name))


def frame_seconds(url: str, name: str) -> float:
    return trials_frame(url, name)["duration"].dropna().iloc[0].total_seconds()


def test_study_summaries_count_trials_by_state(storage_url, study_name):
    study = build_study(storage_url, study_name)
    other = optuna.create_study(study_name=f"{study_name}-max", storage=StudyDatabase.open_for_search(storage_url).storage, direction="maximize")
    other.optimize(lambda t: t.suggest_float("y", 0, 1), n_trials=3)

    summary = study_summaries(storage_url).set_index("study")

    row = summary.loc[study_name]
    counts = pd.Series([t.state.name for t in study.trials]).value_counts()
    for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"):
        assert row[state.lower()] == counts.get(state, 0)
    assert row["trials"] == len(study.trials) and row["directions"] == "minimize"
    assert row["best_value"] == study.best_value
    assert summary.loc[f"{study_name}-max", "best_value"] == other.best_value
    assert summary.loc[f"{study_name}-max", "directions"] == "maximize"


def test_unknown_study_names_the_ones_there_are(sqlite_url, study_name):
    optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(sqlite_url).storage)
    for read in (trials_frame, epochs_frame):
        with pytest.raises(UnknownStudyError, match=f"no study named 'nope'.*{study_name}"):
            read(sqlite_url, "nope")


def test_missing_sqlite_file_is_an_error_and_stays_missing(tmp_path):
    path = tmp_path / "absent.db"
    with pytest.raises(StorageReadError, match="no database file"):
        trials_frame(f"sqlite:///{path}", "any")
    with pytest.raises(StorageReadError, match="no database file"):
        study_summaries(f"sqlite:///{path}")
    assert not path.exists()


def test_database_without_optuna_tables_is_an_error(tmp_path):
    path = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(path).execute("CREATE TABLE unrelated (x)").connection.close()
    with pytest.raises(StorageReadError, match="no Optuna studies"):
        epochs_frame(f"sqlite:///{path}", "any")


def test_export_checks_everything_before_writing(sqlite_url, study_name, tmp_path):
    optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(sqlite_url).storage)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ExportError, match="is a file"):
        export_study(sqlite_url, study_name, "csv", blocker / "out")
    with pytest.raises(ExportError, match="unknown export format"):
        export_study(sqlite_url, study_name, "xlsx", tmp_path / "out")
    with pytest.raises(UnknownStudyError):
        export_study(sqlite_url, "nope", "csv", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where no folder can be made")
def test_export_to_a_folder_that_cannot_be_made_is_an_error(built_sqlite):
    with pytest.raises(ExportError, match="cannot write to /proc/hpsearch-export"):
        export_study(*built_sqlite, "csv", "/proc/hpsearch-export")
