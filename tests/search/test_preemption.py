"""Preemption of ``hpsearch worker``: real processes, real SIGTERM, a real SQLite file and a private PostgreSQL cluster.

SIGTERM (what Slurm, Kubernetes and spot instances send) must hand the running trial back to
the queue at once, resumed by the next worker from its checkpoint, not after the heartbeat's
grace period; and it must take effect within seconds even while the database is away.
"""

import signal
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.search.audit import audit_epochs
from hpsearch.search.signals import EXIT_PREEMPTED
from hpsearch.search.worker_cli import DEFAULT_PREEMPT_GRACE_S
from tests.private_postgres import private_cluster
from tests.search.study_progress import epochs_stored, wait_until
from tests.search.test_workers import start_worker

PACED = Path(__file__).with_name("paced_plugin.py")
# Eight training steps and two validation passes an epoch, each at least 150 ms: an epoch lasts
# about 1.5 s on any CPU, long enough to signal mid-epoch, short next to the default grace.
TINY = ["--plugin", str(PACED), "--models", "paced_classifier", "--epochs", "3", "--dataset-size", "64",
        "--batch-size", "8", "--seq-len", "8", "--pruner", "none", "--no-progress"]
SWEEPS = {
    "grid": ["--param_sweep", "embed_dim:8,16", "pace_ms:150"],
    # A float range: two random draws never repeat a point (an int range of 13 did, and the audit then
    # counts the same configuration trained by two trials).
    "random": ["--param_sweep", "embed_dim:8", "lr:1e-3..1e-2:log", "pace_ms:150", "--sampler", "random", "--n-trials", "2"],
}
# Far longer than any test here waits: a retry that starts sooner was not a heartbeat retry.
HEARTBEAT = ["--heartbeat-interval", "5", "--grace-period", "60"]


def _trials(url, study):
    return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)


def _terminate(worker):
    """SIGTERM ``worker``; its output and the seconds from the signal to its exit."""
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    return out, err, time.monotonic() - sent


@pytest.mark.parametrize("sweep, grace", [("grid", None), ("random", None), ("grid", 0)],
                         ids=["grid", "random", "grid-no-grace"])
def test_sigterm_mid_epoch_hands_the_trial_to_the_next_worker_at_once(sweep, grace, tmp_path, run_hpsearch):
    url, study = f"sqlite:///{tmp_path / 'study.db'}", "preempted"
    created = run_hpsearch("create", "--study", study, "--storage", url, *TINY, *SWEEPS[sweep])
    assert created.returncode == 0, created.stderr
    graced = [] if grace is None else ["--preempt-grace", str(grace)]
    first = start_worker("--study", study, "--storage", url, "--threads", "1", *HEARTBEAT, *graced, cwd=tmp_path)
    try:
        assert wait_until(lambda: epochs_stored(url, study) >= 1, 120), first.communicate()
        time.sleep(0.4)  # into the second epoch's steps
        out, err, seconds = _terminate(first)
    finally:
        first.kill() if first.poll() is None else None
    print(f"SIGTERM to exit: {seconds:.2f} s")
    assert first.returncode == EXIT_PREEMPTED, out[-3000:] + err[-3000:]
    # The grace, then the stop, the retry queued and the process gone; well inside a scheduler's 30 s before SIGKILL
    # even on a CI machine whose two cores run other tests (14 s seen there; under 2 s on a quiet one).
    assert seconds <= (DEFAULT_PREEMPT_GRACE_S if grace is None else grace) + 15, seconds
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("hpsearch: preempted by SIGTERM"), err
    (stopped,) = [t for t in _trials(url, study) if t.state == TrialState.FAIL]
    assert stopped.user_attrs["fail_reason"].startswith("preempted by SIGTERM after "), stopped.user_attrs
    # Queued in the same step: the stopped trial's retry waits before any other worker is alive.
    (retry,) = [t for t in _trials(url, study) if stopped.number in t.user_attrs.get("retry_of", [])]
    assert retry.state == TrialState.WAITING
    kept = stopped.user_attrs["epochs_run"]
    # With the default grace the second epoch ends (about 1.5 s) and is kept; without one, the
    # trial stops at the next step and that epoch is redone.
    assert kept == (2 if grace is None else 1), out[-3000:]

    started, started_at = time.monotonic(), datetime.now()
    second = start_worker("--study", study, "--storage", url, "--threads", "1", *HEARTBEAT, cwd=tmp_path)
    out, err = second.communicate(timeout=300)
    finished = time.monotonic()
    assert second.returncode == 0, out[-3000:] + err[-3000:]
    trials = _trials(url, study)
    retry = next(t for t in trials if t.number == retry.number)
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["resumed_from"]["epoch"] == kept, retry.user_attrs
    assert sorted(retry.intermediate_values) == [1, 2, 3]
    # Not after the heartbeat's 60 s grace: the second worker did all of its work in less.
    assert finished - started < 60, finished - started
    # Optuna stores local naive datetimes; a queued point may run first (the queue is in trial order).
    print(f"second worker: {finished - started:.1f} s in all; the retry started "
          f"{(retry.datetime_start - started_at).total_seconds():.1f} s after it")
    configurations = {tuple(sorted(t.params.items())) for t in trials}
    complete = {tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE}
    assert complete == configurations and len(configurations) == 2
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [stopped.number]
    audit = audit_epochs(url, study, str(tmp_path))
    # The stopped epoch was never checkpointed: only finished epochs count, and none twice.
    assert (audit.finished, audit.trained_twice, audit.lost, audit.running) == (2, 0, 0, 0), audit


def test_max_trials_and_max_time_end_a_worker_cleanly(tmp_path, run_hpsearch):
    url, study = f"sqlite:///{tmp_path / 'study.db'}", "limited"
    budget = ["--param_sweep", "embed_dim:4..16", "pace_ms:100", "--sampler", "random", "--n-trials", "4"]
    created = run_hpsearch("create", "--study", study, "--storage", url, *TINY, *budget)
    assert created.returncode == 0, created.stderr
    capped = run_hpsearch("worker", "--study", study, "--storage", url, "--threads", "1", "--max-trials", "2")
    assert capped.returncode == 0, capped.stderr
    states = [t.state for t in _trials(url, study)]
    assert states.count(TrialState.COMPLETE) == 2 and states.count(TrialState.WAITING) == 2, states
    # A trial lasts about 3 s: the first starts at once, and none starts after one second.
    timed = run_hpsearch("worker", "--study", study, "--storage", url, "--threads", "1", "--max-time", "1")
    assert timed.returncode == 0, timed.stderr
    assert " 1 trial run, 0 failed." in timed.stdout, timed.stdout[-2000:]
    states = [t.state for t in _trials(url, study)]
    assert states.count(TrialState.COMPLETE) == 3 and states.count(TrialState.WAITING) == 1, states


def test_worker_limits_bad_input(tmp_path, run_hpsearch):
    for flag, value in [("--max-time", "0"), ("--preempt-grace", "-1"), ("--max-trials", "0")]:
        result = run_hpsearch("worker", "--study", "x", flag, value)
        assert result.returncode == 2 and flag.split("-", 3)[-1] in result.stderr, (flag, result.stderr)


def test_sigterm_during_a_database_outage_exits_within_10_s(run_hpsearch, tmp_path):
    cluster = private_cluster()
    try:
        url, study = cluster.url(), "outage"
        slow = ["--param_sweep", "embed_dim:8", "pace_ms:150", "--epochs", "12"]
        created = run_hpsearch("create", "--study", study, "--storage", url, *TINY[:-1], "--no-progress", *slow,
                               "--output-dir", str(tmp_path / "runs"))
        assert created.returncode == 0, created.stderr
        # A heartbeat grace longer than the test waits: the worker keeps its trial through the
        # outage, so that only the signal can end its wait for the database.
        patient = ["--heartbeat-interval", "1", "--grace-period", "30", "--db-timeout", "120"]
        worker = start_worker("--study", study, "--storage", url, "--threads", "1", *patient, cwd=tmp_path)
        stopped = False
        try:
            assert wait_until(lambda: epochs_stored(url, study) >= 1, 120)
            cluster.stop()
            stopped = True
            time.sleep(1)  # the worker is training on, or waiting for the database
            out, err, seconds = _terminate(worker)
        finally:
            worker.kill() if worker.poll() is None else None
            cluster.start() if stopped else None
        print(f"SIGTERM to exit during the outage: {seconds:.2f} s")
        assert seconds <= 10, (seconds, err[-2000:])
        assert worker.returncode == EXIT_PREEMPTED, out[-2000:] + err[-2000:]
        lines = err.strip().splitlines()
        assert lines[-1].startswith("hpsearch: preempted by SIGTERM while the database"), out[-3000:] + err
        assert "left to its heartbeat retry" in lines[-1] and "Traceback" not in err
        (left,) = _trials(url, study)
        assert left.state == TrialState.RUNNING  # the database could not be written: the heartbeat retry takes it
        # A peer with a short grace sees the silent trial as stale within seconds and resumes it.
        beat = ["--heartbeat-interval", "1", "--grace-period", "3"]
        time.sleep(3)
        again = start_worker("--study", study, "--storage", url, "--threads", "1", *beat, cwd=tmp_path)
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, err[-2000:]
        failed, retried = _trials(url, study)
        assert (failed.state, retried.state) == (TrialState.FAIL, TrialState.COMPLETE)
        assert retried.user_attrs["resumed_from"]["epoch"] >= 1
        audit = audit_epochs(url, study, str(tmp_path / "runs"))
        assert (audit.trained_twice, audit.lost, audit.running) == (0, 0, 0), audit
    finally:
        cluster.close()
