"""``hpsearch lr-find`` and ``--lr auto``, in real subprocesses."""

import json
import re
import sqlite3

from tests.search.conftest import TINY


def test_lr_find_prints_the_suggestion_and_writes_a_log_axis_plot(tmp_path, run_hpsearch):
    result = run_hpsearch(
        "lr-find", "--models", "transformer_classifier", "embed_dim:32", "num_layers:1",
        "--dataset-size", "400", "--seq-len", "16", "--num-iter", "40", "--out", "curve.html",
    )
    assert result.returncode == 0, result.stderr
    suggested = float(re.search(r"Suggested LR: ([0-9.e+-]+)", result.stdout).group(1))
    assert 1e-7 <= suggested <= 10
    # A stop at divergence says at which LR, and why there: a new user read "stopped early at divergence" beside a falling curve.
    assert re.search(r"(ran every step|stopped at lr=[0-9.e+-]+, where the loss rose past 4x its lowest; the plot ends before it)\)$",
                     result.stdout.splitlines()[0]), result.stdout
    html = (tmp_path / "curve.html").read_text()
    assert "plotly" in html and '"type":"log"' in html.replace(" ", "")
    assert "<script src=" not in html  # plotly.js is embedded: the file works offline


def test_lr_find_bad_input_is_one_line(tmp_path, run_hpsearch):
    for args, message in [
        (["--models", "tfn_classifier", "embed_dim:32,64"], "one value per hyperparameter"),
        (["--models", "tfn_classifier", "--start-lr", "1", "--end-lr", "0.1"], "--start-lr must be positive"),
        (["--models", "nope"], "unknown model"),
        (["--models", "tfn_classifier", "--out", "missing/dir/plot.html"], "does not exist"),
        # A trial's schedule does not change the test: refused, not ignored.
        (["--models", "tfn_classifier", "--scheduler", "step"], "--scheduler does not change the LR range test"),
        (["--models", "tfn_classifier", "--lr=0.1"], "--lr does not change the LR range test"),
    ]:
        result = run_hpsearch("lr-find", *args)
        assert result.returncode == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_lr_find_without_a_fall_of_the_loss_suggests_nothing_and_exits_1(tmp_path, run_hpsearch):
    """A range that starts where the loss blows up has no steepest descent: its first LR was printed as one."""
    result = run_hpsearch(
        "lr-find", "--models", "tfn_classifier", "embed_dim:16", "--dataset-size", "200",
        "--start-lr", "10", "--end-lr", "1e4", "--num-iter", "20", "--out", "curve.html",
    )
    assert result.returncode == 1, result.stderr
    assert "Suggested LR" not in result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("hpsearch lr-find: no suggested LR: the LR range test found no LR at which the loss falls")
    assert "--start-lr" in line
    assert "plotly" in (tmp_path / "curve.html").read_text()  # the curve shows why


def test_lr_auto_runs_the_range_test_for_each_trial(tmp_path, run_hpsearch):
    result = run_hpsearch("--models", "tfn_classifier", "--param_sweep", "embed_dim:16", "--lr", "auto", *TINY)
    assert result.returncode == 0, result.stderr
    assert "LR range test suggests lr=" in result.stdout
    with sqlite3.connect(tmp_path / "hpsearch.db") as db:
        (value,) = db.execute("select value_json from trial_user_attributes where key = 'lr_finder.suggested'").fetchone()
        history = json.loads(db.execute("select value_json from trial_user_attributes where key = 'lr_history'").fetchone()[0])
    suggested = json.loads(value)
    assert 1e-7 <= suggested <= 10
    # The warmup's last step reaches the suggested peak LR... then cosine decay takes it down.
    assert max(history) <= suggested * (1 + 1e-9)
