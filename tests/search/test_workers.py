"""Many workers on one study, in real processes, on SQLite and on the real PostgreSQL server."""

import os
import shlex
import signal
import subprocess
import time

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from hpsearch.search.workers import describe_queue
from hpsearch.storage.epoch_metrics import EpochMetricsTable
from tests.search.conftest import hpsearch_command

# A trial of this size takes a fraction of a second: the tests exercise coordination, not training.
TRIVIAL = ["--models", "tfn_classifier", "--param_sweep", "lr:1e-4..1e-2", "embed_dim:4..8", "--sampler", "random",
           "--epochs", "1", "--dataset-size", "20", "--seq-len", "4", "--no-progress"]


def start_worker(*args, cwd, env=None):
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    environment.pop("HPSEARCH_STORAGE", None) if env is None or "HPSEARCH_STORAGE" not in env else None
    return subprocess.Popen([*hpsearch_command(), "worker", *args], cwd=cwd, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def trials_of(url, study_name):
    return optuna.load_study(study_name=study_name, storage=url).get_trials(deepcopy=False)


def test_four_workers_share_a_200_trial_study_on_postgres(postgres_url, study_name, tmp_path, run_hpsearch):
    created = run_hpsearch("create", "--study", study_name, "--storage", postgres_url, "--n-trials", "200", *TRIVIAL)
    assert created.returncode == 0, created.stderr
    assert f"hpsearch worker --study {study_name}" in created.stdout
    workers = [start_worker("--study", study_name, "--storage", postgres_url, "--threads", "1", "--no-progress", cwd=tmp_path)
               for _ in range(4)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
        assert "Traceback" not in err and "Error" not in err
    trials = trials_of(postgres_url, study_name)
    assert len(trials) == 200
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert sum(int(out.rsplit("Worker", 1)[1].split(":")[1].split()[0]) for out, _ in outputs) == 200
    assert sum(1 for out, _ in outputs if " 0 trials run" not in out) >= 2  # the work really was shared


def test_four_local_workers_finish_200_trials_on_sqlite_without_lock_errors(tmp_path, run_hpsearch):
    result = run_hpsearch(*TRIVIAL, "--n-trials", "200", "--workers", "4", "--study-name", "many", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "database is locked" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    trials = trials_of(f"sqlite:///{tmp_path / 'hpsearch.db'}", "many")
    assert len(trials) == 200
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    # Identically seeded samplers in four processes would draw the same values four times.
    assert len({t.params["lr"] for t in trials}) == 200
    # Four processes at most (the command itself is one of the four), and the work was shared.
    workers = {t.user_attrs["worker"] for t in trials}
    assert 2 <= len(workers) <= 4, workers


def test_a_grid_runs_each_point_once_across_workers(tmp_path, run_hpsearch):
    grid = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:4,5,6,7", "lr:1e-3,2e-3,3e-3",
            "--epochs", "1", "--dataset-size", "20", "--seq-len", "4", "--no-progress"]
    result = run_hpsearch(*grid, "--workers", "3", "--study-name", "grid")
    assert result.returncode == 0, result.stderr
    trials = trials_of(f"sqlite:///{tmp_path / 'hpsearch.db'}", "grid")
    points = [(t.params["embed_dim"], t.params["lr"]) for t in trials]
    assert len(points) == 12 and len(set(points)) == 12


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def epoch_lines(text):
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("Epoch ")]


def test_a_killed_workers_trial_is_retried_from_its_checkpoint(tmp_path, run_hpsearch):
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    slow = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:32", "--epochs", "6", "--dataset-size", "600",
            "--heartbeat-interval", "1", "--grace-period", "3", "--study", "killed", "--pruner", "none"]
    assert run_hpsearch("create", *slow).returncode == 0
    beat = ["--heartbeat-interval", "1", "--grace-period", "3"]
    first = start_worker("--study", "killed", *beat, cwd=tmp_path)
    table = EpochMetricsTable(url)
    wait_for(lambda: len(table.frame("killed")) >= 2, 120, "two finished epochs")
    first.send_signal(signal.SIGKILL)
    first_out, _ = first.communicate()
    (original,) = trials_of(url, "killed")
    assert original.state == TrialState.RUNNING

    time.sleep(4)  # past the grace period
    second = start_worker("--study", "killed", *beat, cwd=tmp_path)
    second_out, second_err = second.communicate(timeout=300)
    assert second.returncode == 0, second_err

    trials = trials_of(url, "killed")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed, retried = trials
    assert failed.state == TrialState.FAIL and retried.state == TrialState.COMPLETE
    resumed_after = retried.user_attrs["resumed_from"]["epoch"]
    assert resumed_after >= 2
    # No epoch trained twice, none lost: the killed worker trained 1..k, the retry k+1..6.
    trained_first, trained_second = epoch_lines(first_out), epoch_lines(second_out)
    assert trained_first[:resumed_after] == list(range(1, resumed_after + 1))
    assert trained_second == list(range(resumed_after + 1, 7))
    assert sorted(retried.intermediate_values) == [1, 2, 3, 4, 5, 6]
    assert retried.user_attrs["epochs_run"] == 6 and len(retried.user_attrs["lr_history"]) == 6
    rows = table.frame("killed")
    assert sorted(rows[rows["number"] == retried.number]["epoch"]) == [1, 2, 3, 4, 5, 6]
    table.close()


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_fails_the_running_trial_with_a_reason_and_exits_cleanly(signum, code, tmp_path, run_hpsearch):
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    slow = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:32", "--epochs", "20", "--dataset-size", "600",
            "--study", "stopped"]
    assert run_hpsearch("create", *slow).returncode == 0
    worker = start_worker("--study", "stopped", cwd=tmp_path)
    table = EpochMetricsTable(url)
    wait_for(lambda: len(table.frame("stopped")) >= 1, 120, "a finished epoch")
    table.close()
    worker.send_signal(signum)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == code
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"hpsearch: stopped by {signal.Signals(signum).name}")
    (trial,) = trials_of(url, "stopped")
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"].startswith(f"interrupted by {signal.Signals(signum).name} after ")


def test_worker_bad_input(tmp_path, run_hpsearch):
    for args, message in [
        (["--study", "nope"], "no study database"),
        (["--study", "nope", "--storage", f"sqlite:///{tmp_path / 'missing.db'}"], "no study database"),
        (["--study", "x", "--heartbeat-interval", "5", "--grace-period", "5"], "must exceed"),
    ]:
        result = run_hpsearch("worker", *args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    ["postgresql://alice:s3cret@db-host:5432/runs", "postgresql://alice:p@ss@word@db-host/runs",
     "postgresql://db-host/runs?user=alice&password=s3cret"],
)
def test_the_queue_with_a_password_points_workers_to_the_environment(url):
    study = optuna.create_study(study_name="sweep one")
    text = describe_queue(study, 12, url)
    first, export, worker = text.splitlines()
    assert first.startswith("Study 'sweep one' in postgresql://")
    assert first.endswith(": 12 trials to run. Start workers with")
    assert export == "  export HPSEARCH_STORAGE=<your storage URL, with its password>"
    assert worker == "  hpsearch worker --study 'sweep one'"
    assert "s3cret" not in text and "ss@word" not in text


def test_the_queue_without_a_password_prints_the_whole_command():
    study = optuna.create_study(study_name="sweep")
    for url in ["postgresql://alice@db-host:5432/runs", "sqlite:////data/my runs/hpsearch.db"]:
        command = describe_queue(study, 3, url).splitlines()[1]
        assert command == f"  hpsearch worker --study sweep --storage {shlex.quote(url)}"


def test_the_printed_worker_commands_run_when_pasted(postgres_url, study_name, tmp_path, run_hpsearch):
    # The test server trusts every connection: any password is let in, and it must not be printed.
    url = make_url(postgres_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    created = run_hpsearch("create", "--study", study_name, "--storage", url, *TRIVIAL, "--n-trials", "1")
    assert created.returncode == 0, created.stderr
    assert "s3cret-pw" not in created.stdout + created.stderr
    pasted = created.stdout.split("Start workers with\n", 1)[1].splitlines()
    assert [line.split()[0] for line in pasted] == ["export", "hpsearch"]
    # What the user does: put their URL in place of the placeholder, paste both lines into a shell.
    script = "\n".join(pasted).replace("<your storage URL, with its password>", shlex.quote(url))
    script = script.replace("hpsearch worker", f"{shlex.join(hpsearch_command())} worker")
    environment = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    (trial,) = trials_of(postgres_url, study_name)
    assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
