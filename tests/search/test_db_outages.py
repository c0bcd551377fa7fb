"""Workers ride out database outages: a private PostgreSQL cluster restarted and stopped under two real workers.

The cluster is this test module's own (``tests.private_postgres``), so the shared server is
never restarted. What a fault cost is counted by ``audit_epochs`` from the epoch table and each
trial's checkpoint, not from what the workers say.
"""

import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.search.api import load_model
from hpsearch.search.audit import audit_epochs
from hpsearch.search.orchestrator import Heartbeat, open_database
from tests.private_postgres import private_cluster
from tests.search.study_progress import epochs_stored, wait_until
from tests.search.test_workers import start_worker

# Seven forward passes an epoch (five training, two validation), each at least PACE_MS long, so a
# trial's length in seconds has a floor on any CPU: the faults below are timed against it.
PACED = Path(__file__).with_name("paced_plugin.py")
PACE_MS = 80
GRID = ["--plugin", str(PACED), "--models", "paced_classifier", "--param_sweep", "lr:1e-3,3e-3", "embed_dim:8,16",
        f"pace_ms:{PACE_MS}", "--pruner", "none", "--dataset-size", "400", "--seq-len", "8", "--no-progress"]


@pytest.fixture(scope="module")
def cluster():
    cluster = private_cluster()
    yield cluster
    cluster.close()


def _states(url, study):
    return [t.state for t in optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)]


def _create(run_hpsearch, url, study, *extra):
    created = run_hpsearch("create", "--study", study, "--storage", url, *GRID, *extra)
    assert created.returncode == 0, created.stderr


def test_two_workers_survive_two_restarts_and_a_20_s_stop(cluster, run_hpsearch, study_name, tmp_path):
    url = cluster.url()
    # 16 epochs: at least 9 s a trial, longer than the two restarts below take on a loaded machine.
    _create(run_hpsearch, url, study_name, "--epochs", "16", "--output-dir", str(tmp_path / "runs"))
    # A grace period longer than the outage: the workers keep their trials through it.
    beat = ["--heartbeat-interval", "2", "--grace-period", "40", "--db-timeout", "90"]
    workers = [start_worker("--study", study_name, "--storage", url, "--threads", "1", *beat, cwd=tmp_path)
               for _ in range(2)]
    try:
        # Faults follow the workers' progress, not the clock, so a fast machine meets them too.
        assert wait_until(lambda: _states(url, study_name).count(TrialState.RUNNING) == 2, 120)
        for _ in range(2):
            cluster.restart()
            stored = epochs_stored(url, study_name)
            assert wait_until(lambda stored=stored: epochs_stored(url, study_name) >= stored + 1, 120)
        # Trials still wait: the work goes on after the server comes back.
        assert _states(url, study_name).count(TrialState.WAITING) >= 1
        cluster.stop()
        time.sleep(20)
        cluster.start()
        outputs = [w.communicate(timeout=300) for w in workers]
    finally:
        for w in workers:
            w.kill() if w.poll() is None else None
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, out[-3000:] + err[-3000:]
        assert "Traceback" not in err, err[-3000:]
    assert any("back after" in out for out, _ in outputs)  # the outages really hit a worker
    # Training went on while the server was down, its epochs stored once it was back.
    assert any("is kept and stored once the database is back" in out for out, _ in outputs)
    assert _states(url, study_name).count(TrialState.COMPLETE) == 4
    audit = audit_epochs(url, study_name, str(tmp_path / "runs"))
    assert (audit.configurations, audit.finished, audit.trained_twice, audit.lost, audit.running) == (4, 4, 0, 0, 0)


def test_a_heartbeat_missed_for_one_interval_does_not_hand_the_trial_to_a_waiting_worker(
    cluster, run_hpsearch, study_name, tmp_path
):
    """Optuna's heartbeat thread dies at its first failed write; the trial then went stale while it
    trained, and the waiting worker failed it and trained it again."""
    url = cluster.url()
    # 40 epochs: at least 22 s, so the trial outlasts the second worker's start, the outage and a
    # grace period after it: a heartbeat thread that died at the outage would be caught.
    _create(run_hpsearch, url, study_name, "--n-trials", "1", "--sampler", "random", "--epochs", "40",
            "--output-dir", str(tmp_path / "runs"))
    # A 10 s grace: the 3 s outage, the server's restart and the heartbeat's retry backoff (up to
    # 2 s) after one 2 s interval fit in it even on a loaded machine; 6 s did not always.
    beat = ["--heartbeat-interval", "2", "--grace-period", "10"]
    second = None
    first = start_worker("--study", study_name, "--storage", url, "--threads", "1", *beat, cwd=tmp_path)
    try:
        assert wait_until(lambda: _states(url, study_name) == [TrialState.RUNNING], 120)
        second = start_worker("--study", study_name, "--storage", url, "--threads", "1", *beat, cwd=tmp_path)
        time.sleep(8)  # the second worker is up, its queue empty, waiting on the running trial
        cluster.stop()
        time.sleep(3)  # one heartbeat interval and more
        cluster.start()
        outputs = [w.communicate(timeout=300) for w in (first, second)]
    finally:
        for w in (first, second):
            w.kill() if w is not None and w.poll() is None else None
    assert [w.returncode for w in (first, second)] == [0, 0], outputs
    trials = optuna.load_study(study_name=study_name, storage=url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE]  # no FAIL, no retry
    assert " 1 trial run" in outputs[0][0] and " 0 trials run" in outputs[1][0]


def test_past_db_timeout_a_worker_stops_with_one_line_and_its_trial_is_resumed_later(
    cluster, run_hpsearch, study_name, tmp_path
):
    url = cluster.url()
    # 12 epochs: the server stops after two, with at least 5 s of training left.
    _create(run_hpsearch, url, study_name, "--n-trials", "1", "--sampler", "random", "--epochs", "12",
            "--output-dir", str(tmp_path / "runs"))
    beat = ["--heartbeat-interval", "1", "--grace-period", "3"]
    worker = start_worker("--study", study_name, "--storage", url, "--threads", "1", "--db-timeout", "4", *beat, cwd=tmp_path)
    try:
        assert wait_until(lambda: _states(url, study_name) == [TrialState.RUNNING], 120)
        assert wait_until(lambda: epochs_stored(url, study_name) >= 2, 120)  # a checkpoint to resume from
        cluster.stop()
        out, err = worker.communicate(timeout=120)
    finally:
        worker.kill() if worker.poll() is None else None
        cluster.start()
    assert worker.returncode == 1, out[-2000:] + err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpsearch: error: the database postgresql://postgres@127.0.0.1:"), err
    assert "has not answered for" in lines[0] and "Traceback" not in out + err
    (left,) = optuna.load_study(study_name=study_name, storage=url).get_trials(deepcopy=False)
    assert left.state == TrialState.RUNNING  # never half-written: left to its heartbeat retry
    time.sleep(4)  # its heartbeat goes stale
    again = start_worker("--study", study_name, "--storage", url, "--threads", "1", *beat, cwd=tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    failed, retried = optuna.load_study(study_name=study_name, storage=url).get_trials(deepcopy=False)
    assert (failed.state, retried.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert retried.user_attrs.get("resumed_from", {}).get("epoch", 0) >= 1, (retried.user_attrs, out[-3000:])
    audit = audit_epochs(url, study_name, str(tmp_path / "runs"))
    assert (audit.trained_twice, audit.lost, audit.running) == (0, 0, 0)


def test_a_trial_whose_last_epoch_ends_during_an_outage_past_the_grace_is_recorded_once_and_its_worker_lives(
    cluster, run_hpsearch, study_name, tmp_path
):
    """The worker's closing writes wait out the outage; a peer fails the trial meanwhile and queues its retry.

    The peer is this test, through the cluster's Unix socket while TCP clients (the worker) still
    find the server away: so the peer acts first every time, where in the field it did in 1 of 3
    tries. The worker died then (``Cannot tell a FAIL trial``, exit 1), and the retry "resumed
    after epoch 6 of 6", trained nothing and recorded COMPLETE with ``flops.total`` 0 and a
    ``checkpoint`` that was never written.
    """
    url, epochs, runs = cluster.url(), 6, tmp_path / "runs"
    _create(run_hpsearch, url, study_name, "--n-trials", "1", "--sampler", "random", "--epochs", str(epochs),
            "--output-dir", str(runs))
    # A trial's stale-heartbeat retry after 6 s; the worker leaves a trial whose heartbeat it could
    # not store for 5 s, which the two epochs it trains into the outage (about 1.2 s) stay under.
    grace = 6
    beat = ["--heartbeat-interval", "1", "--grace-period", str(grace), "--db-timeout", "90"]
    worker = start_worker("--study", study_name, "--storage", url, "--threads", "1", *beat, cwd=tmp_path)
    try:
        assert wait_until(lambda: epochs_stored(url, study_name) >= epochs - 2, 120)
        cluster.stop()  # the last epochs end while it is away, and the worker's closing writes wait
        time.sleep(grace + 6)
        cluster.start(tcp=False)
        peer = open_database(cluster.socket_url(), Heartbeat(interval=1, grace_period=grace))
        try:
            optuna.storages.fail_stale_trials(peer.load_study(study_name))
            states = [t.state for t in peer.load_study(study_name).get_trials(deepcopy=False)]
        finally:
            peer.close()
        cluster.stop()
        cluster.start()
        assert states == [TrialState.FAIL, TrialState.WAITING], states  # failed by the peer, its retry queued
        out, err = worker.communicate(timeout=300)
    finally:
        worker.kill() if worker.poll() is None else None
    assert worker.returncode == 0, out[-3000:] + err[-3000:]
    assert "Traceback" not in out + err, out[-3000:] + err[-3000:]
    failed, retried = optuna.load_study(study_name=study_name, storage=url).get_trials(deepcopy=False)
    assert (failed.state, retried.state) == (TrialState.FAIL, TrialState.COMPLETE)
    # Every epoch was trained and checkpointed by the failed trial: the retry records them and trains none.
    assert retried.user_attrs["resumed_from"]["epoch"] == epochs, (retried.user_attrs, out[-3000:])
    assert sorted(retried.intermediate_values) == list(range(1, epochs + 1))
    assert retried.user_attrs["epochs_run"] == epochs
    assert Path(retried.user_attrs["checkpoint"]).exists(), retried.user_attrs
    assert retried.user_attrs.get("flops.total", 1) > 0, retried.user_attrs  # the original's count, or none; never 0
    model = load_model(url, study_name)
    assert sum(p.numel() for p in model.parameters()) == retried.user_attrs["params.count"]
    audit = audit_epochs(url, study_name, str(runs))
    assert (audit.finished, audit.trained_twice, audit.lost, audit.running) == (1, 0, 0, 0), audit


def test_an_outage_longer_than_the_proxys_db_timeout_is_ridden_out_by_its_workers(
    cluster, run_hpsearch, study_name, tmp_path
):
    """The proxy gives up on a request after its own --db-timeout; its workers wait for theirs.

    The proxy's answer then was an unknown error to the worker, which stopped (exit 1) though its
    own --db-timeout had far to go.
    """
    from tests.search.test_proxy_cli import free_port, running_proxy

    url, port = cluster.url(), free_port()
    _create(run_hpsearch, url, study_name, "--n-trials", "1", "--sampler", "random", "--epochs", "12",
            "--output-dir", str(tmp_path / "runs"))
    patient = ["--heartbeat-interval", "2", "--grace-period", "60"]  # the trial stays this worker's
    with running_proxy(url, port, *patient, "--db-timeout", "2"):
        worker = start_worker("--study", study_name, "--storage", f"grpc://127.0.0.1:{port}", "--threads", "1",
                              "--db-timeout", "90", *patient, cwd=tmp_path)
        try:
            assert wait_until(lambda: epochs_stored(url, study_name) >= 2, 120)
            cluster.stop()
            time.sleep(8)  # four times the proxy's patience
            cluster.start()
            out, err = worker.communicate(timeout=300)
        finally:
            worker.kill() if worker.poll() is None else None
    assert worker.returncode == 0, out[-3000:] + err[-3000:]
    assert "Traceback" not in out + err, out[-3000:] + err[-3000:]
    assert f"storage proxy grpc://127.0.0.1:{port} unavailable (proxy: " in out, out[-3000:]
    (trial,) = optuna.load_study(study_name=study_name, storage=url).get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["epochs_run"] == 12
    audit = audit_epochs(url, study_name, str(tmp_path / "runs"))
    assert (audit.finished, audit.trained_twice, audit.lost, audit.running) == (1, 0, 0, 0), audit
