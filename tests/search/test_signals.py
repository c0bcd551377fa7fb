"""A signal that lands inside code whose own cleanup then fails still stops the search as that signal."""

import sqlite3

from hpsearch.search.signals import Interrupted, interruption

from .conftest import sigint_model_plugin

# The model's sixth training forward pass sends this process SIGINT inside a block whose cleanup
# raises, as tqdm's write lock did when the interrupt landed in it ("cannot release un-acquired lock").
PLUGIN = sigint_model_plugin("cleanup_fails", 6, """
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)  # the handler raises Interrupted here
    finally:
        raise RuntimeError("cleanup failed")
""")


def test_interruption_is_found_behind_the_error_its_cleanup_raised():
    try:
        try:
            raise Interrupted("SIGINT")
        finally:
            raise RuntimeError("cannot release un-acquired lock")
    except RuntimeError as error:
        found = interruption(error)
    assert isinstance(found, Interrupted) and found.signal_name == "SIGINT"
    assert interruption(ValueError("unrelated")) is None


def test_a_sigint_masked_by_a_failing_cleanup_still_stops_the_search_with_130(tmp_path, run_hpsearch):
    (tmp_path / "plugin.py").write_text(PLUGIN)
    result = run_hpsearch("--plugin", "plugin.py", "--models", "cleanup_fails", "--epochs", "5", "--dataset-size", "200",
                          "--no-progress", "--study-name", "masked")
    assert result.returncode == 130, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("hpsearch: stopped by SIGINT")
    with sqlite3.connect(tmp_path / "hpsearch.db") as db:
        [(state,)] = db.execute("SELECT state FROM trials").fetchall()
        [(reason,)] = db.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'fail_reason'").fetchall()
    assert state == "FAIL" and reason.startswith('"interrupted by SIGINT after ')
