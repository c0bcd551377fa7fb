"""hpsearch studies / trials / export, and the results table, against real study databases."""

from __future__ import annotations

import datetime
import math
import random
import sqlite3
from contextlib import closing

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from hpsearch.search.errors import UsageError
from hpsearch.storage.errors import StorageError

# What the CLI prints as one line, exit 2: the search's usage errors and the storage layer's.
ONE_LINE_ERRORS = (UsageError, StorageError)
from hpsearch.search.results import format_results_table
from hpsearch.search.tables_cli import export_main, studies_main, trials_main
from hpsearch.storage import StudyDatabase, study_summaries, trials_frame
from tests.search.test_report import files

optuna.logging.set_verbosity(optuna.logging.ERROR)
DISTRIBUTIONS = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "kernel_type": CategoricalDistribution(["rbf", "compact"])}


def trial(state: TrialState, value: float | None, lr: float, kernel: str, epochs: int, seconds: float) -> optuna.trial.FrozenTrial:
    frozen = create_trial(
        state=state,
        value=value,
        params={"lr": lr, "kernel_type": kernel},
        distributions=DISTRIBUTIONS,
        user_attrs={"epochs_run": epochs},
        intermediate_values={epochs: value} if value is not None else {},
    )
    frozen.datetime_start = datetime.datetime(2024, 1, 1, 12, 0, 0)
    frozen.datetime_complete = frozen.datetime_start + datetime.timedelta(seconds=seconds)
    return frozen


def make_study(url: str, name: str, direction: str = "minimize") -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=StudyDatabase.open_for_search(url).storage, direction=direction)
    study.set_user_attr("hpsearch.metric", "val_loss")
    study.add_trials(
        [
            trial(TrialState.COMPLETE, 0.5, 1e-3, "rbf", 5, 12.0),
            trial(TrialState.PRUNED, 0.05, 3e-3, "rbf", 2, 4.0),  # pruned: ranked after complete trials
            trial(TrialState.COMPLETE, 0.25, 1e-2, "compact", 5, 11.0),
            trial(TrialState.FAIL, None, 1e-4, "compact", 1, 1.0),
            trial(TrialState.COMPLETE, 0.75, 2e-3, "compact", 5, 10.0),
        ]
    )
    return study


def table_rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


@pytest.mark.parametrize(("direction", "order"), [("minimize", ["2", "0", "4"]), ("maximize", ["4", "0", "2"])])
def test_results_table_ranks_complete_trials_by_direction(sqlite_url, study_name, direction, order):
    study = make_study(sqlite_url, study_name, direction)

    rows = table_rows(format_results_table(study, "val_loss"))

    assert rows[0] == ["trial", "state", "lr", "kernel_type", "val_loss", "epochs", "seconds"]
    assert [r[0] for r in rows[1:]] == [*order, "1", "3"]
    assert rows[1 + order.index("2")] == ["2", "COMPLETE", "0.01", "compact", "0.25", "5", "11.0"]
    assert rows[4] == ["1", "PRUNED", "0.003", "rbf", "0.05", "2", "4.0"]
    assert rows[5] == ["3", "FAIL", "0.0001", "compact", "-", "1", "1.0"]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_results_table_of_a_multi_objective_study(sqlite_url, study_name):
    study = optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(sqlite_url).storage, directions=["minimize", "maximize"])
    study.set_metric_names(["val_loss", "val_acc"])
    for loss, acc in [(0.5, 0.7), (0.2, 0.6), (0.9, 0.9)]:
        study.tell(study.ask({"lr": DISTRIBUTIONS["lr"]}), [loss, acc])

    rows = table_rows(format_results_table(study))

    assert rows[0] == ["trial", "state", "lr", "val_loss", "val_acc", "epochs", "seconds", "pareto"]
    # None of the three dominates another, so all are on the front, ranked by the first objective.
    assert [(r[0], r[3], r[4], r[7]) for r in rows[1:]] == [("1", "0.2", "0.6", "*"), ("0", "0.5", "0.7", "*"), ("2", "0.9", "0.9", "*")]


def test_results_table_of_an_empty_study(sqlite_url, study_name):
    study = optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(sqlite_url).storage)
    assert "no trials" in format_results_table(study)


def test_trials_command_prints_the_table(sqlite_url, study_name, capsys):
    study = make_study(sqlite_url, study_name)

    assert trials_main(["--study", study_name, "--storage", sqlite_url]) == 0

    assert capsys.readouterr().out.strip() == format_results_table(study, "val_loss")


def test_studies_command_lists_counts_and_best(sqlite_url, study_name, capsys):
    make_study(sqlite_url, study_name)
    optuna.create_study(study_name=f"{study_name}-empty", storage=StudyDatabase.open_for_search(sqlite_url).storage)

    assert studies_main(["--storage", sqlite_url]) == 0

    out = capsys.readouterr().out
    # Character for character what pandas printed when the command built this table with it.
    summary = study_summaries(sqlite_url)
    summary["best_value"] = [("-" if math.isnan(v) else f"{v:.6g}") for v in summary["best_value"]]
    summary["metric"] = summary["metric"].replace("", "-")
    assert out == summary.to_string(index=False) + "\n"
    rows = table_rows(out)
    assert rows[0] == ["study", "directions", "metric", "trials", "complete", "pruned", "fail", "running", "waiting", "best_value"]
    assert rows[1] == [study_name, "minimize", "val_loss", "5", "3", "1", "1", "0", "0", "0.25"]
    assert rows[2] == [f"{study_name}-empty", "minimize", "-", "0", "0", "0", "0", "0", "0", "-"]


def test_export_command_writes_both_files(sqlite_url, study_name, tmp_path, capsys):
    make_study(sqlite_url, study_name)
    out = tmp_path / "export"

    assert export_main(["--study", study_name, "--storage", sqlite_url, "--format", "csv", "--out", str(out)]) == 0

    assert capsys.readouterr().out.split() == ["wrote", str(out / "trials.csv"), "wrote", str(out / "epochs.csv")]
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials.columns) == list(trials_frame(sqlite_url, study_name).columns)
    assert list(trials["number"]) == [0, 1, 2, 3, 4]
    assert list(pd.read_csv(out / "epochs.csv")["epoch"]) == [5, 2, 5, 5]


def test_storage_comes_from_the_environment_then_the_working_directory(tmp_path, study_name, monkeypatch, capsys):
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    make_study(f"sqlite:///{tmp_path / 'hpsearch.db'}", study_name)
    assert studies_main([]) == 0
    assert study_name in capsys.readouterr().out

    elsewhere = tmp_path / "elsewhere.db"
    make_study(f"sqlite:///{elsewhere}", f"{study_name}-env")
    monkeypatch.setenv("HPSEARCH_STORAGE", f"sqlite:///{elsewhere}")
    assert trials_main(["--study", f"{study_name}-env"]) == 0
    assert "COMPLETE" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "--study", "nope", "--out", "{tmp}/o"], "no study named 'nope'"),
        (["trials", "--study", "nope"], "no study named 'nope'"),
        (["export", "--study", "{study}", "--format", "xlsx", "--out", "{tmp}/o"], "invalid choice: 'xlsx'"),
        (["export", "--study", "{study}", "--out", "{tmp}/file/o"], "is a file, not a folder"),
        (["export", "--study", "{study}"], "required: --out"),
        (["trials", "--study", "{study}", "--storage", "not a url"], "malformed storage URL"),
        (["studies", "--storage", "mysql://u@h/db"], "unsupported storage URL scheme"),
        (["studies", "--storag", "x"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_usage_error_and_writes_nothing(sqlite_url, study_name, tmp_path, monkeypatch, argv, message):
    make_study(sqlite_url, study_name)
    monkeypatch.setenv("HPSEARCH_STORAGE", sqlite_url)
    (tmp_path / "file").write_text("")
    mains = {"export": export_main, "trials": trials_main, "studies": studies_main}
    args = [a.format(tmp=tmp_path, study=study_name) for a in argv[1:]]
    before = files(tmp_path)

    with pytest.raises(ONE_LINE_ERRORS, match=message) as error:
        mains[argv[0]](args)

    assert "\n" not in str(error.value)
    assert files(tmp_path) == before


@pytest.mark.parametrize("command", [studies_main, lambda a: trials_main(["--study", "s", *a]), lambda a: export_main(["--study", "s", "--out", "o", *a])])
def test_missing_sqlite_file_is_not_created(tmp_path, command):
    path = tmp_path / "typo.db"
    with pytest.raises(ONE_LINE_ERRORS, match="no database file"):
        command(["--storage", f"sqlite:///{path}"])
    assert not path.exists()


def test_passwords_are_masked_in_errors():
    # Nothing listens on port 9 of this machine: the connection is refused at once.
    with pytest.raises(ONE_LINE_ERRORS) as error:
        studies_main(["--storage", "postgresql://alice:s3cret-pw@127.0.0.1:9/db"])
    assert "s3cret-pw" not in str(error.value) and "alice:***@127.0.0.1:9" in str(error.value)


def test_commands_read_postgres(postgres_url, study_name, tmp_path, capsys):
    make_study(postgres_url, study_name)
    assert trials_main(["--study", study_name, "--storage", postgres_url]) == 0
    assert studies_main(["--storage", postgres_url]) == 0
    assert export_main(["--study", study_name, "--storage", postgres_url, "--format", "json", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{study_name} " in out and "0.25" in out
    assert len(pd.read_json(tmp_path / "trials.json", orient="records")) == 5


def test_hpsearch_export_exits_2_with_one_line(run_hpsearch, tmp_path):
    result = run_hpsearch("export", "--study", "s", "--out", "o", "--storage", f"sqlite:///{tmp_path / 'none.db'}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no database file" in result.stderr
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "o").exists()


def damage_table(url: str, study_name: str, path, table: str) -> bytes:
    """A study in ``path`` whose ``table`` has its first page overwritten; the file's bytes."""
    make_study(url, study_name)
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        root = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    data = bytearray(path.read_bytes())
    # Only that table's page: the schema reads, so the damage shows half-way through a command.
    data[(root - 1) * page_size : root * page_size] = random.Random(root).randbytes(page_size)
    path.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize("table", ["trials", "trial_values"])
@pytest.mark.parametrize("command", ["studies", "trials", "export"])
def test_a_page_damaged_where_the_command_reads_is_one_usage_error(sqlite_url, study_name, tmp_path, command, table):
    data = damage_table(sqlite_url, study_name, tmp_path / "hpsearch.db", table)
    main, args = {
        "studies": (studies_main, []),
        "trials": (trials_main, ["--study", study_name]),
        "export": (export_main, ["--study", study_name, "--out", str(tmp_path / "o")]),
    }[command]

    with pytest.raises(ONE_LINE_ERRORS) as error:
        main([*args, "--storage", sqlite_url])

    message = str(error.value)
    assert "\n" not in message and message.startswith(f"cannot open storage {sqlite_url}: ")
    assert "the file is damaged or is not a SQLite database (database disk image is malformed)" in message
    assert (tmp_path / "hpsearch.db").read_bytes() == data and not (tmp_path / "o").exists()


def test_studies_still_lists_what_a_damaged_page_elsewhere_leaves_readable(sqlite_url, study_name, tmp_path, capsys):
    damage_table(sqlite_url, study_name, tmp_path / "hpsearch.db", "trial_params")
    assert studies_main(["--storage", sqlite_url]) == 0
    assert f"{study_name} " in capsys.readouterr().out


def test_a_study_file_the_reader_cannot_write_is_read(study_name):
    """A WAL study file in a folder the reader cannot write (a read-only mount, another user's
    folder) is read immutable; SQLite would otherwise need its -shm file beside it."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="hpsearch-ro-"))
    try:
        url = f"sqlite:///{folder / 'hpsearch.db'}"
        make_study(url, study_name)
        # As a finished search leaves it: every page in the file, no -wal or -shm beside it.
        with closing(sqlite3.connect(folder / "hpsearch.db")) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for leftover in ("hpsearch.db-wal", "hpsearch.db-shm"):
            (folder / leftover).unlink()
        folder.chmod(0o755)
        (folder / "hpsearch.db").chmod(0o644)
        as_reader: list[str] = []
        if os.geteuid() == 0:  # root writes anywhere: read as nobody, for whom the folder is another user's
            if shutil.which("setpriv") is None:
                pytest.skip("needs setpriv to read as another user")
            as_reader = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
        else:
            folder.chmod(0o555)
        for command in (["studies"], ["trials", "--study", study_name]):
            done = subprocess.run([*as_reader, sys.executable, "-m", "hpsearch.search.cli", *command, "--storage", url],
                                  capture_output=True, text=True, env={**os.environ, "HOME": str(folder)}, timeout=120)
            assert done.returncode == 0, done.stderr
            assert study_name in done.stdout or "0.25" in done.stdout, done.stdout
        assert sorted(p.name for p in folder.iterdir()) == ["hpsearch.db"]  # nothing written beside it
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)
