"""A full disk under a real worker: a 2 MiB tmpfs holding the checkpoint folder or the SQLite study file, filled mid-trial.

The worker must stop at once with one line naming the full path (exit ``EXIT_DISK_FULL``), hand
its trial back to be resumed, take no other trial and leave no ``.partial`` file; once space is
freed, the next worker resumes the trial, and ``audit_epochs`` finds no epoch trained twice or lost.
"""

import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.search.audit import audit_epochs
from hpsearch.search.errors import EXIT_DISK_FULL
from tests.search.study_progress import epochs_stored, wait_until
from tests.search.test_workers import start_worker

PACED = Path(__file__).with_name("paced_plugin.py")
# Ten forward passes an epoch, each at least 50 ms: the disk fills while the trial's second epoch trains.
SMALL = ["--plugin", str(PACED), "--models", "paced_classifier", "--epochs", "3", "--dataset-size", "64",
         "--batch-size", "8", "--seq-len", "8", "--pruner", "none", "--no-progress"]
GRID = [*SMALL, "--param_sweep", "embed_dim:8,16,24", "pace_ms:50"]
# A short grace: where the study file itself is full, the trial is left RUNNING for its heartbeat retry.
BEAT = ["--heartbeat-interval", "1", "--grace-period", "3"]


def _trials(url, study):
    return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)


@pytest.mark.parametrize("full", ["checkpoints", "study-file"])
def test_a_full_disk_stops_the_worker_with_one_line_and_the_trial_resumes_exactly_once_space_is_freed(
    full, small_disk, tmp_path, run_hpsearch
):
    on_disk = small_disk.path
    database = (on_disk if full == "study-file" else tmp_path) / "study.db"
    output_dir = (on_disk if full == "checkpoints" else tmp_path) / "runs"
    url, study = f"sqlite:///{database}", "full"
    created = run_hpsearch("create", "--study", study, "--storage", url, *GRID, "--output-dir", str(output_dir))
    assert created.returncode == 0, created.stderr
    worker = start_worker("--study", study, "--storage", url, "--threads", "1", *BEAT, cwd=tmp_path)
    try:
        assert wait_until(lambda: epochs_stored(url, study) >= 1, 120), worker.communicate()
        small_disk.fill()
        out, err = worker.communicate(timeout=120)
    finally:
        worker.kill() if worker.poll() is None else None
    assert worker.returncode == EXIT_DISK_FULL, out[-3000:] + err[-3000:]
    assert "Traceback" not in out + err, out[-3000:] + err[-3000:]
    (line,) = err.strip().splitlines()
    named = database if full == "study-file" else output_dir / "checkpoints" / study / "trial-0"
    assert line.startswith(f"hpsearch: no space left on {named} while "), line
    assert line.endswith("; free space and start a worker again"), line
    assert small_disk.partial_files() == []
    small_disk.free()

    trials = _trials(url, study)
    started = [t for t in trials if t.state != TrialState.WAITING]
    assert len(started) == 1, [(t.number, t.state) for t in trials]  # no further trial was taken
    (stopped,) = started
    if full == "checkpoints":
        # The database could be written: handed back as a preempted trial, its retry queued at once.
        assert stopped.state == TrialState.FAIL
        # It says which: "if it saved one" left the user to look.
        saved = (named / "last.pt").exists()
        assert ("queued again to resume from its last checkpoint" if saved else "queued again to start afresh") in line
        assert stopped.user_attrs["fail_reason"].startswith(f"no space left on {named} while saving the checkpoint")
        assert any(stopped.number in t.user_attrs.get("retry_of", []) for t in trials)
    else:
        # Nothing could be written: left RUNNING for its heartbeat retry, as a killed worker's.
        assert stopped.state == TrialState.RUNNING and "left RUNNING" in line

    again = start_worker("--study", study, "--storage", url, "--threads", "1", *BEAT, cwd=tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, out[-3000:] + err[-3000:]
    trials = _trials(url, study)
    (retry,) = [t for t in trials if t.params == stopped.params and t.state == TrialState.COMPLETE]
    assert retry.user_attrs["resumed_from"]["epoch"] >= 1, retry.user_attrs
    assert sorted(retry.intermediate_values) == [1, 2, 3]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    audit = audit_epochs(url, study, str(output_dir))
    assert (audit.configurations, audit.finished, audit.trained_twice, audit.lost, audit.running) == (3, 3, 0, 0, 0), audit
    assert small_disk.partial_files() == []


def test_a_full_study_file_stops_the_worker_mid_epoch_at_its_next_heartbeat_not_after_the_grace(
    small_disk, tmp_path, run_hpsearch
):
    """Epochs of 50 steps of at least 300 ms (15 s), a heartbeat every second and a 20 s grace: the failed beat stops the worker within seconds.

    Before, a beat failed on a full disk read as an outage: the trial trained on to the end of its
    epoch, whose write then met the full disk, or to the grace period's end, if sooner.
    """
    url, study = f"sqlite:///{small_disk.path / 'study.db'}", "full-beat"
    long_epochs = ["--plugin", str(PACED), "--models", "paced_classifier", "--param_sweep", "embed_dim:8", "pace_ms:300",
                   "--epochs", "2", "--dataset-size", "500", "--batch-size", "8", "--seq-len", "8", "--pruner", "none",
                   "--no-progress"]
    created = run_hpsearch("create", "--study", study, "--storage", url, *long_epochs, "--output-dir", str(tmp_path / "runs"))
    assert created.returncode == 0, created.stderr
    worker = start_worker("--study", study, "--storage", url, "--threads", "1", "--heartbeat-interval", "1",
                          "--grace-period", "20", cwd=tmp_path)
    try:
        assert wait_until(lambda: epochs_stored(url, study) >= 1, 120), worker.communicate()
        small_disk.fill()
        filled = time.monotonic()
        out, err = worker.communicate(timeout=120)
        seconds = time.monotonic() - filled
    finally:
        worker.kill() if worker.poll() is None else None
    assert worker.returncode == EXIT_DISK_FULL, out[-3000:] + err[-3000:]
    assert seconds < 8, (seconds, out[-2000:])  # the epoch's end is 15 s away, the grace's 19 s
    (line,) = err.strip().splitlines()
    assert line.startswith(f"hpsearch: no space left on {small_disk.path / 'study.db'} while writing to the study database")
    small_disk.free()
    again = start_worker("--study", study, "--storage", url, "--threads", "1", *BEAT, cwd=tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, out[-3000:] + err[-3000:]
    audit = audit_epochs(url, study, str(tmp_path / "runs"))
    assert (audit.finished, audit.trained_twice, audit.lost, audit.running) == (1, 0, 0, 0), audit
