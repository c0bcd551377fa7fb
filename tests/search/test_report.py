"""``hpsearch report``: the HTML file, opened in a real Chromium, and its charts' contents."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpsearch.search import report_cli
from hpsearch.search.errors import UsageError
from hpsearch.storage.errors import StorageError

# What the CLI prints as one line, exit 2: the search's usage errors and the storage layer's.
ONE_LINE_ERRORS = (UsageError, StorageError)
from hpsearch.search.report import pareto_mask, report_sections
from hpsearch.search.report_cli import report_main
from hpsearch.storage import EpochMetricsTable, StudyDatabase, trial_id, trials_frame
from tests.browser import Page, browser  # noqa: F401  (browser is a fixture)
from tests.search.conftest import TINY, hpsearch_command

optuna.logging.set_verbosity(optuna.logging.ERROR)
SEARCHED_STUDY = "tfn_classifier-synthetic_tokens"
CHARTS = ("optimization-history", "param-importances", "parallel-coordinate", "loss-curves", "lr-curves", "flops-pareto")
DISTRIBUTIONS = {"embed_dim": IntDistribution(8, 128), "kernel_type": CategoricalDistribution(["rbf", "compact"])}
_searched: dict[str, str] = {}


def files(folder: Path) -> list[Path]:
    """The files under ``folder``, less SQLite's WAL companions (they come and go with connections)."""
    return sorted(p for p in folder.rglob("*") if not p.name.endswith(("-wal", "-shm")))


def searched_study(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of a study made by the real search (2 trials), run once per test session."""
    if "url" not in _searched:
        folder = tmp_path_factory.mktemp("searched")
        env = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}
        command = [*hpsearch_command(), "--models", "tfn_classifier", "--param_sweep", "embed_dim:16,32", *TINY]
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        _searched["url"] = f"sqlite:///{folder / 'hpsearch.db'}"
    return _searched["url"]


@pytest.fixture(scope="module")
def real_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return searched_study(tmp_path_factory)


def make_study(url: str, name: str, points: list[tuple[TrialState, float | None, float | None]], directions: list[str], names: list[str] | None = None) -> optuna.Study:
    """A study with one trial per (state, value, flops) point: params, flops.* attrs, two epoch rows each.

    With two directions the FLOPs are the second objective.
    """
    study = optuna.create_study(study_name=name, storage=StudyDatabase.open_for_search(url).storage, directions=directions)
    if names:
        study.set_metric_names(names)
    for i, (state, value, flops) in enumerate(points):
        values = None if value is None else [value, flops] if len(directions) == 2 else [value]
        attrs = {} if flops is None else {"flops.per_sample_forward": flops, "flops.total": 1000 * flops, "params.count": 10 * i}
        params = {"embed_dim": 8 * (i + 1), "kernel_type": ("rbf", "compact")[i % 2]}
        steps = {} if value is None else {1: value + 0.5, 2: value}
        study.add_trial(create_trial(state=state, values=values, params=params, distributions=DISTRIBUTIONS, user_attrs=attrs, intermediate_values=steps))
    with EpochMetricsTable(url) as table:
        for trial in study.get_trials(deepcopy=False):
            for epoch, value in trial.intermediate_values.items():
                table.write(trial_id(trial), {"epoch": epoch, "lr": 1e-3 / epoch, "train_loss": value + 0.1, "val_loss": value})
    return study


# (loss, flops): trials 0, 2, 1, 4 form the front; 3 and 5 are dominated.
MO_POINTS = [(0.9, 1e6), (0.5, 4e6), (0.7, 2e6), (0.8, 5e6), (0.4, 9e6), (0.95, 3e6)]


def rendered(page: Page) -> dict[str, dict]:
    """Per section id: whether its chart drew, its traces (name, point labels) and table rows."""
    script = """JSON.stringify(Object.fromEntries(Array.from(document.querySelectorAll('section')).map(s => {
        const plot = s.querySelector('.js-plotly-plot');
        return [s.id, {
            drawn: !!(plot && plot.querySelector('.main-svg')),
            traces: plot ? plot.data.map(d => ({name: d.name || '', text: d.text ? Array.from(d.text).map(String) : []})) : [],
            rows: Array.from(s.querySelectorAll('tbody tr')).map(r => r.cells[0].innerText),
            notes: Array.from(s.querySelectorAll('.note')).map(n => n.innerText)}];
    })))"""
    drawn = "Array.from(document.querySelectorAll('.js-plotly-plot')).filter(p => p.querySelector('.main-svg')).length"
    page.wait_for(f"{drawn} >= {len(CHARTS)}")
    return json.loads(page.evaluate(script))


def open_report(browser, path: Path) -> tuple[Page, dict[str, dict]]:  # noqa: F811
    page = browser.open(path.resolve().as_uri())
    sections = rendered(page)
    assert list(sections) == [*CHARTS, "best-trials"]
    assert all(sections[c]["drawn"] and sections[c]["traces"] for c in CHARTS), sections
    assert page.errors == []
    # Offline: the page asked for nothing but itself (and inline data).
    assert [u for u in page.requests if not u.startswith(("file:", "data:"))] == []
    return page, sections


def test_report_of_a_real_search_opens_in_chromium_with_every_chart(real_url, tmp_path, run_hpsearch, browser):  # noqa: F811
    out = tmp_path / "report.html"

    result = run_hpsearch("report", "--study", SEARCHED_STUDY, "--storage", real_url, "--out", str(out))

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out.resolve()}"
    text = out.read_text()
    assert text.count("plotly.js v") == 1 and "<script src" not in text  # plotly.js inlined once
    _, sections = open_report(browser, out)
    trials = trials_frame(real_url, SEARCHED_STUDY).sort_values("value")
    best_first = [str(n) for n in trials["number"]]
    assert sections["best-trials"]["rows"] == best_first
    # Per trial: train and validation loss, one LR line, each named after the trial.
    assert sorted(t["name"] for t in sections["loss-curves"]["traces"]) == sorted(f"trial {n} {c}" for n in best_first for c in ("train_loss", "val_loss"))
    assert sorted(t["name"] for t in sections["lr-curves"]["traces"]) == sorted(f"trial {n}" for n in best_first)
    flops = sections["flops-pareto"]["traces"]
    assert sorted(flops[0]["text"] + flops[1]["text"]) == sorted(best_first) and flops[1]["name"].startswith("Pareto front")


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # set_metric_names
def test_multi_objective_report_marks_the_studys_pareto_front(sqlite_url, study_name, tmp_path, capsys, browser):  # noqa: F811
    study = make_study(sqlite_url, study_name, [(TrialState.COMPLETE, v, f) for v, f in MO_POINTS], ["minimize", "minimize"], ["val_loss", "flops"])
    out = tmp_path / "mo.html"

    assert report_main(["--study", study_name, "--storage", sqlite_url, "--out", str(out)]) == 0

    _, sections = open_report(browser, out)
    front = {str(t.number) for t in study.best_trials}
    assert front == {"0", "1", "2", "4"}
    others, marked = sections["flops-pareto"]["traces"]
    assert set(marked["text"]) == front and set(others["text"]) == {"3", "5"}
    assert sections["best-trials"]["rows"] == ["4", "1", "2", "0"]  # the front, by val_loss
    assert "4 of 6 complete trials on the front." in sections["flops-pareto"]["notes"]


@pytest.mark.parametrize(("direction", "front"), [("minimize", {0, 2, 4}), ("maximize", {0, 3})])
def test_single_objective_front_is_computed_from_complete_trials(sqlite_url, study_name, direction, front):
    points = [
        (TrialState.COMPLETE, 0.9, 1e6),
        (TrialState.PRUNED, 0.1, 1e6),  # would dominate everything, but is not complete
        (TrialState.COMPLETE, 0.5, 2e6),
        (TrialState.COMPLETE, 0.95, 3e6),
        (TrialState.COMPLETE, 0.5, 2e6),  # a duplicate of a front point stays on the front
        (TrialState.COMPLETE, 0.3, None),  # no FLOPs: not plotted
    ]
    make_study(sqlite_url, study_name, points, [direction])

    _, sections = report_sections(sqlite_url, study_name)

    flops = next(s for s in sections if s.id == "flops-pareto")
    others, marked = flops.figure.data
    assert {int(n) for n in marked.text} == front
    assert {int(n) for n in others.text} == {0, 2, 3, 4} - front
    assert flops.figure.layout.xaxis.title.text == "flops.per_sample_forward"


def test_pareto_mask():
    x = np.array([1.0, 2.0, 2.0, 3.0, 0.5, 3.0])
    y = np.array([5.0, 3.0, 4.0, 1.0, 9.0, 1.0])
    assert pareto_mask(x, y, maximize_y=False).tolist() == [True, True, False, True, True, True]
    assert pareto_mask(x, y, maximize_y=True).tolist() == [False, False, False, False, True, False]


def test_a_study_run_outside_hpsearch_gets_notes_instead_of_missing_charts(sqlite_url, study_name):
    study = optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(sqlite_url).storage)
    study.add_trial(create_trial(value=1.0, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, intermediate_values={0: 2.0, 1: 1.0}))

    _, sections = report_sections(sqlite_url, study_name)

    by_id = {s.id: s for s in sections}
    assert by_id["param-importances"].notes == ["Needs at least 2 complete trials that differ in a parameter (this study has 1 complete)."]
    assert by_id["flops-pareto"].notes == ["No trial has FLOPs (objective or flops.* user attribute) to plot."]
    assert by_id["lr-curves"].notes == ["No per-epoch learning rate in hpsearch_epoch_metrics."]
    assert [list(t.y) for t in by_id["loss-curves"].figure.data] == [[2.0, 1.0]]  # the reported values stand in
    assert by_id["optimization-history"].figure is not None and by_id["parallel-coordinate"].figure is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "nope", "--out", "{tmp}/r.html"], "no study named 'nope'"),
        (["--study", "{study}", "--out", "{tmp}/missing/r.html"], "folder .*missing does not exist"),
        (["--study", "{study}", "--out", "{tmp}"], "is a folder"),
        (["--study", "{study}", "--out", "{tmp}/r.html", "--top", "0"], "--top must be at least 1"),
        (["--study", "{study}-empty", "--out", "{tmp}/r.html"], "has no trials yet"),
        (["--out", "{tmp}/r.html"], "required: --study"),
    ],
)
def test_bad_input_is_one_usage_error_and_writes_nothing(sqlite_url, study_name, tmp_path, monkeypatch, args, message):
    make_study(sqlite_url, study_name, [(TrialState.COMPLETE, 1.0, 1e6)], ["minimize"])
    optuna.create_study(study_name=f"{study_name}-empty", storage=StudyDatabase.open_for_search(sqlite_url).storage)
    monkeypatch.setenv("HPSEARCH_STORAGE", sqlite_url)
    before = files(tmp_path)

    with pytest.raises(ONE_LINE_ERRORS, match=message) as error:
        report_main([a.format(tmp=tmp_path, study=study_name) for a in args])

    assert "\n" not in str(error.value)
    assert files(tmp_path) == before


def test_missing_sqlite_file_is_not_created(tmp_path):
    path = tmp_path / "typo.db"
    with pytest.raises(ONE_LINE_ERRORS, match="no database file"):
        report_main(["--study", "s", "--storage", f"sqlite:///{path}", "--out", str(tmp_path / "r.html")])
    assert not path.exists()


def test_a_failed_write_leaves_the_old_report_and_no_temporary_file(sqlite_url, study_name, tmp_path, monkeypatch):
    make_study(sqlite_url, study_name, [(TrialState.COMPLETE, 1.0, 1e6)], ["minimize"])
    out = tmp_path / "reports" / "r.html"
    out.parent.mkdir()
    out.write_text("old")

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_cli.os, "replace", full_disk)
    with pytest.raises(ONE_LINE_ERRORS, match="cannot write --out .*No space left on device"):
        report_main(["--study", study_name, "--storage", sqlite_url, "--out", str(out)])

    assert out.read_text() == "old"
    assert [p.name for p in out.parent.iterdir()] == ["r.html"]


def test_report_reads_postgres(postgres_url, study_name, tmp_path):
    make_study(postgres_url, study_name, [(TrialState.COMPLETE, v, f) for v, f in MO_POINTS[:3]], ["minimize"])
    out = tmp_path / "pg.html"

    assert report_main(["--study", study_name, "--storage", postgres_url, "--out", str(out)]) == 0

    text = out.read_text()
    assert all(f'<section id="{c}">' in text for c in CHARTS)
    assert f"hpsearch report: {study_name}" in text
