"""Many workers on one study, in real processes, on SQLite and on the real PostgreSQL server."""

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from hpsearch.search import workers
from hpsearch.search.errors import UsageError
from hpsearch.search.orchestrator import Heartbeat, Orchestrator
from hpsearch.search.resolved import resolve
from hpsearch.search.spec import StudySpec
from hpsearch.search.workers import assign_devices, describe_queue, worker_devices, worker_launches
from hpsearch.storage.attributes import SPEC_ATTR
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
    # Workers stopped for want of work were not interrupted: nothing may say so.
    assert "stopped by" not in result.stderr and "interrupted" not in result.stderr, result.stderr


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def epoch_lines(text):
    # "Trial 3 | Epoch 02 | Train Loss: ...": the epoch numbers, in the order printed.
    return [int(line.split(" | ")[1].split()[1]) for line in text.splitlines() if line.startswith("Trial ") and " | Epoch " in line]


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
    # The take named the worker, so the trial of one that died says whose it was.
    dead, survivor = failed.user_attrs["worker"], retried.user_attrs["worker"]
    assert dead.split(":")[1:] == [str(first.pid), "cpu"] and survivor.split(":")[1:] == [str(second.pid), "cpu"]
    reason = f"no heartbeat for over 3 s: its worker ({dead}) was killed or lost the database"
    assert failed.user_attrs["fail_reason"] == reason and "fail_reason" not in retried.user_attrs
    assert failed.user_attrs["epochs_run"] == len(failed.intermediate_values) >= 2
    assert f"Trial 0 failed: {reason}; queued again to resume from its checkpoint" in second_out
    resumed_after = retried.user_attrs["resumed_from"]["epoch"]
    assert resumed_after >= 2
    # No epoch trained twice, none lost: the killed worker trained 1..k, the retry k+1..6. The
    # killed worker printed 1..k, or 1..k-1 when the kill landed between epoch k's checkpoint and its line.
    trained_first, trained_second = epoch_lines(first_out), epoch_lines(second_out)
    assert trained_first == list(range(1, len(trained_first) + 1)), trained_first
    assert len(trained_first) in (resumed_after - 1, resumed_after), (trained_first, resumed_after)
    assert trained_second == list(range(resumed_after + 1, 7))
    assert sorted(retried.intermediate_values) == [1, 2, 3, 4, 5, 6]
    assert retried.user_attrs["epochs_run"] == 6 and len(retried.user_attrs["lr_history"]) == 6
    rows = table.frame("killed")
    assert sorted(rows[rows["number"] == retried.number]["epoch"]) == [1, 2, 3, 4, 5, 6]
    table.close()


# Two grid points whose trials last several seconds (50 small steps an epoch, a low LR that never
# trips the divergence guard): a second worker has to start up (imports, data) while the first one's
# trial runs, and be killed in its own.
SLOW_EPOCHS = 24
SLOW_PAIR = ["--models", "tfn_classifier", "--param_sweep", "lr:1e-4,2e-4", "--batch-size", "4",
             "--dataset-size", "200", "--pruner", "none", "--no-progress"]
BEAT = ["--heartbeat-interval", "1", "--grace-period", "3"]


def by_state(url, study_name, state):
    # Until the command has made the study, the test must not open the file with Optuna, which
    # would create the tables and race the command doing the same ("table studies already exists").
    try:
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
            if connection.execute("SELECT 1 FROM studies WHERE study_name = ?", (study_name,)).fetchone() is None:
                return []
    except sqlite3.OperationalError:  # no file or no tables yet
        return []
    return [t for t in trials_of(url, study_name) if t.state == state]


def epochs_done(table, study_name):
    """How many epochs each trial (by number) has finished."""
    frame = table.frame(study_name)
    return frame.groupby("number").size().to_dict() if len(frame) else {}


def child_pids(pid):
    return [int(child) for task in os.listdir(f"/proc/{pid}/task")
            for child in open(f"/proc/{pid}/task/{task}/children").read().split()]


def kill_during_the_last_trial(table, study_name, first_trial, doomed_pid):
    """SIGKILL ``doomed_pid`` once its trial (the last one) has a checkpoint and ``first_trial`` nearly ended.

    The other worker then finishes ``first_trial`` within the grace period and finds the queue
    empty while the killed trial is still RUNNING with a fresh heartbeat: the case where it used to exit.
    """
    def ready():
        done = epochs_done(table, study_name)
        last = [n for n in done if n != first_trial]
        return bool(last) and done[last[0]] >= 1 and done.get(first_trial, 0) >= SLOW_EPOCHS - 2

    wait_for(ready, 180, "the last trial's first epoch, near the end of the first trial")
    os.kill(doomed_pid, signal.SIGKILL)


def assert_recovered(url, study_name, first_trial, survivor_pid):
    """The killed trial is FAIL, its retry ran in the survivor from the checkpoint, and nothing is RUNNING."""
    trials = trials_of(url, study_name)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    complete = {t.number: t for t in trials if t.state == TrialState.COMPLETE}
    assert len(complete) == 2 and first_trial in complete
    (retry,) = [t for n, t in complete.items() if n != first_trial]
    assert retry.system_attrs["failed_trial"] == failed.number and retry.params == failed.params
    # The survivor finished its own trial before the killed one went stale: it waited, then took the retry.
    assert complete[first_trial].datetime_complete < failed.datetime_complete <= retry.datetime_start
    assert retry.user_attrs["worker"].split(":")[1] == str(survivor_pid)
    assert retry.user_attrs["resumed_from"]["epoch"] >= 1
    assert sorted(retry.intermediate_values) == list(range(1, SLOW_EPOCHS + 1))


def test_a_survivor_with_an_empty_queue_recovers_a_trial_killed_in_another_worker(tmp_path, run_hpsearch):
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    created = run_hpsearch("create", "--study", "last", *SLOW_PAIR, "--epochs", str(SLOW_EPOCHS), *BEAT)
    assert created.returncode == 0, created.stderr
    survivor = start_worker("--study", "last", "--threads", "1", *BEAT, cwd=tmp_path)
    wait_for(lambda: by_state(url, "last", TrialState.RUNNING), 120, "the first worker's trial")
    (first_trial,) = [t.number for t in by_state(url, "last", TrialState.RUNNING)]
    doomed = start_worker("--study", "last", "--threads", "1", *BEAT, cwd=tmp_path)
    table = EpochMetricsTable(url)
    kill_during_the_last_trial(table, "last", first_trial, doomed.pid)
    doomed.communicate()
    table.close()
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    assert f"Worker {survivor.pid}: 2 trials run, 0 failed." in out
    assert_recovered(url, "last", first_trial, survivor.pid)


def test_local_workers_recover_a_killed_childs_trial_and_report_the_studys_states(tmp_path):
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    environment = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}
    command = subprocess.Popen([*hpsearch_command(), *SLOW_PAIR, "--epochs", str(SLOW_EPOCHS), *BEAT, "--workers", "2",
                                "--study-name", "pair"], cwd=tmp_path, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    # The command is the first worker: it takes the first point at once; its child, once started, the last.
    wait_for(lambda: (tmp_path / "hpsearch.db").exists() and by_state(url, "pair", TrialState.RUNNING), 120,
             "the command's own trial")
    (first_trial,) = [t.number for t in by_state(url, "pair", TrialState.RUNNING)]
    wait_for(lambda: child_pids(command.pid), 60, "the worker process")
    (child,) = child_pids(command.pid)
    table = EpochMetricsTable(url)
    kill_during_the_last_trial(table, "pair", first_trial, child)
    table.close()
    out, err = command.communicate(timeout=300)
    assert_recovered(url, "pair", first_trial, command.pid)
    # One trial is FAIL in the study (the killed one; its retry completed), and that is what is said.
    assert command.returncode == 1, err
    assert err.strip().splitlines()[-1] == "hpsearch: 1 trial(s) failed; their fail_reason attributes say why"
    assert f"Worker process {child} killed by SIGKILL." in out
    assert "3 trials run now, 3 in all." in out


def test_a_rerun_recovers_the_running_trial_of_a_killed_command(tmp_path, run_hpsearch):
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    search = [*SLOW_PAIR, "--epochs", "6", *BEAT, "--workers", "2", "--study-name", "rerun"]
    environment = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}
    first = subprocess.Popen([*hpsearch_command(), *search], cwd=tmp_path, env=environment, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    table = EpochMetricsTable(url)

    def last_trial_underway():
        if not (tmp_path / "hpsearch.db").exists() or by_state(url, "rerun", TrialState.WAITING):
            return False
        done = epochs_done(table, "rerun")
        return any(done.get(t.number, 0) >= 1 for t in by_state(url, "rerun", TrialState.RUNNING))

    wait_for(last_trial_underway, 120, "the last trial's first epoch")
    os.killpg(first.pid, signal.SIGKILL)  # the command and its worker process: nobody is left to fail the trial
    first.wait()
    done = epochs_done(table, "rerun")
    table.close()
    # One trial, or both where the two workers took the two points at once.
    orphans = {t.number for t in by_state(url, "rerun", TrialState.RUNNING)}
    assert orphans and any(done.get(number, 0) >= 1 for number in orphans), (orphans, done)

    again = run_hpsearch(*search)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" not in again.stdout
    trials = trials_of(url, "rerun")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert {t.number for t in trials if t.state == TrialState.FAIL} == orphans
    for orphan in orphans:
        (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == orphan]
        assert retry.state == TrialState.COMPLETE
        if done.get(orphan, 0) >= 1:  # it had a checkpoint to resume from
            assert retry.user_attrs["resumed_from"]["epoch"] >= 1
    assert sorted({t.params["lr"] for t in trials if t.state == TrialState.COMPLETE}) == [1e-4, 2e-4]


# SIGTERM preempts a worker instead: tests/search/test_preemption.py.
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130)])
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
    assert err.strip().endswith("the next worker resumes it from its last checkpoint"), err
    trial, retry = trials_of(url, "stopped")
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"].startswith(f"interrupted by {signal.Signals(signum).name} after ")
    # Queued again at once, as a preempted trial is: the worker started again resumed nothing, exit 0.
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == [trial.number]
    assert retry.system_attrs["fixed_params"] == trial.params


def test_ctrl_c_to_a_search_with_local_workers_says_why_its_workers_are_stopped_with_sigterm(tmp_path):
    # The worker process's own lines said "preempted by SIGTERM", which the user never sent.
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    environment = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"} | {"PYTHONUNBUFFERED": "1"}
    search = subprocess.Popen(
        [*hpsearch_command(), "--models", "tfn_classifier", "--param_sweep", "embed_dim:16,32", "--epochs", "60",
         "--dataset-size", "600", "--study-name", "two", "--workers", "2", "--no-progress", "--threads", "2"],
        cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        table = None

        def both_trained() -> bool:
            nonlocal table
            if not (tmp_path / "hpsearch.db").exists():
                return False
            table = table or EpochMetricsTable(url)
            frame = table.frame("two")
            return frame.empty is False and frame["trial_id"].nunique() == 2
        wait_for(both_trained, 180, "an epoch of each worker's trial")
        table.close()
        search.send_signal(signal.SIGINT)
        _, err = search.communicate(timeout=120)
    finally:
        search.kill() if search.poll() is None else None
    assert search.returncode == 130, err
    assert "hpsearch: SIGINT: stopping 1 worker process(es) with SIGTERM, which hands each one's trial back to the " \
           "queue" in err, err
    assert "Traceback" not in err, err
    # The worker process's trial is queued again at once; this process's own, as a plain run's, by the re-run.
    reasons = sorted(t.user_attrs["fail_reason"].split(" after ")[0] for t in trials_of(url, "two") if t.state == TrialState.FAIL)
    assert reasons in (["interrupted by SIGINT", "preempted by SIGTERM"], ["preempted by SIGTERM"]), reasons


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
    first, export, worker, shares = text.splitlines()
    assert shares.startswith("  # several workers on one machine: OMP_NUM_THREADS=N before each and --threads N after")
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


def test_the_queue_of_a_study_with_an_artifact_store_gives_each_worker_its_own_folder():
    study = optuna.create_study(study_name="sweep")
    command = describe_queue(study, 3, "postgresql://db-host/runs", "s3://bucket/runs").splitlines()[1]
    assert command == "  hpsearch worker --study sweep --output-dir . --storage postgresql://db-host/runs"


def test_the_queue_passes_on_the_liveness_settings_create_was_given():
    study = optuna.create_study(study_name="sweep")
    url = "postgresql://db-host/runs"
    assert describe_queue(study, 3, url, heartbeat=Heartbeat()).splitlines()[1] == f"  hpsearch worker --study sweep --storage {url}"
    command = describe_queue(study, 3, url, heartbeat=Heartbeat(5, 15, db_timeout=60)).splitlines()[1]
    assert command == f"  hpsearch worker --study sweep --heartbeat-interval 5 --grace-period 15 --db-timeout 60 --storage {url}"


def test_the_printed_worker_commands_run_when_pasted(postgres_url, study_name, tmp_path, run_hpsearch):
    # The test server trusts every connection: any password is let in, and it must not be printed.
    url = make_url(postgres_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    created = run_hpsearch("create", "--study", study_name, "--storage", url, *TRIVIAL, "--n-trials", "1")
    assert created.returncode == 0, created.stderr
    assert "s3cret-pw" not in created.stdout + created.stderr
    assert created.stdout.startswith("Strategy:   --sampler ")  # what auto chose, as a plain run says it
    pasted = created.stdout.split("Start workers with\n", 1)[1].splitlines()
    assert [line.split()[0] for line in pasted] == ["export", "hpsearch", "#"]  # the comment pastes harmlessly
    # What the user does: put their URL in place of the placeholder, paste both lines into a shell.
    script = "\n".join(pasted).replace("<your storage URL, with its password>", shlex.quote(url))
    script = script.replace("hpsearch worker", f"{shlex.join(hpsearch_command())} worker")
    environment = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}
    elsewhere = tmp_path / "elsewhere"  # the worker's own folder, as on a cluster node
    elsewhere.mkdir()
    result = subprocess.run(["bash", "-c", script], cwd=elsewhere, env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"The study's results, with every worker's trials: hpsearch trials --study {study_name}"
    assert "s3cret-pw" not in result.stdout + result.stderr
    (trial,) = trials_of(postgres_url, study_name)
    assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
    # The study's folder, where create ran, not each worker's own: a retry elsewhere found no checkpoint.
    assert Path(trial.user_attrs["checkpoint"]).is_relative_to(tmp_path / "checkpoints")
    assert list(elsewhere.iterdir()) == []



def test_a_worker_in_another_folder_reads_the_data_create_was_given_relative(tmp_path, run_hpsearch):
    """A relative --data was stored as typed, and each worker read it from its own folder: "load.csv: no such file"."""
    rows = "".join(f"{(7 * i) % 11},{20 + i % 12}\n" for i in range(120))
    (tmp_path / "load.csv").write_text("load,OT\n" + rows)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    created = run_hpsearch("create", "--study", "forecast", "--storage", url, "--models", "tfn_regressor", "--task",
                           "csv_timeseries", "--data", "load.csv", "--window", "12", "--horizon", "2",
                           "--param-sweep", "embed_dim:8", "--epochs", "1", "--precision", "fp32")
    assert created.returncode == 0, created.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    worked = run_hpsearch("worker", "--study", "forecast", "--storage", url, cwd=elsewhere)
    assert worked.returncode == 0, worked.stderr
    assert worked.stdout.splitlines()[-1] == f"The study's results, with every worker's trials: hpsearch trials --study forecast --storage {url}"
    (trial,) = optuna.load_study(study_name="forecast", storage=url).trials
    assert trial.state == TrialState.COMPLETE
    stored = StudySpec.from_json(optuna.load_study(study_name="forecast", storage=url).user_attrs[SPEC_ATTR])
    assert stored.task_options["data"] == str(tmp_path / "load.csv")


def test_a_worker_draws_the_trials_a_plain_run_with_the_same_seed_draws(tmp_path, run_hpsearch):
    """Workers' samplers were unseeded: trial 0 differed from run to run, and --seed meant nothing to them."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    search = ["--storage", url, "--models", "tfn_classifier", "--param-sweep", "embed_dim:4..16", "lr:1e-4..1e-2",
              "--n-trials", "3", "--epochs", "1", "--seed", "3"]
    plain = run_hpsearch("--study", "plain", *search, "--no-progress")
    assert plain.returncode == 0, plain.stderr
    for name in ("worked", "worked-again"):
        created = run_hpsearch("create", "--study", name, *search)
        assert created.returncode == 0, created.stderr
        worked = run_hpsearch("worker", "--study", name, "--storage", url)
        assert worked.returncode == 0, worked.stderr

    def params(name):
        return [t.params for t in optuna.load_study(study_name=name, storage=url).trials]

    assert len(params("plain")) == 3 and params("worked") == params("plain") and params("worked-again") == params("plain")

# One GPU per worker (--devices). This machine may have no GPU: the tests check what each worker is
# given (its command line and environment), and that asking for a GPU without one is a usage error.


def test_devices_go_round_robin_when_workers_outnumber_them():
    assert assign_devices("cuda:0,cuda:1", 2, 2) == ["cuda:0", "cuda:1"]
    assert assign_devices("cuda:0,cuda:1", 5, 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert assign_devices(" cuda:1 , cuda:0", 3, 4) == ["cuda:1", "cuda:0", "cuda:1"]
    assert assign_devices("cuda:0,cuda:1,cuda:2", 2, 3) == ["cuda:0", "cuda:1"]  # fewer workers: the first ones
    assert assign_devices("cuda:3,cuda:3", 2, 4) == ["cuda:3", "cuda:3"]  # two workers may share a GPU on purpose


def test_auto_is_every_visible_gpu_or_the_default_device_without_one():
    assert assign_devices("auto", 3, 0) == [None, None, None]
    assert assign_devices("auto", 4, 3) == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert assign_devices("auto", 1, 8) == ["cuda:0"]
    assert assign_devices("cuda", 3, 2) == ["cuda:0", "cuda:1", "cuda:0"]


@pytest.mark.parametrize(
    "spec, visible, message",
    [
        ("gpu0", 2, "'gpu0' is not a GPU"),
        ("cuda:0,", 2, "'' is not a GPU"),
        ("", 2, "'' is not a GPU"),
        ("cuda:x", 2, "'cuda:x' is not a GPU"),
        ("cpu", 2, "'cpu' is not a GPU"),
        ("cuda:-1", 2, "'cuda:-1' is not a GPU"),
        ("cuda:0,cuda:2", 2, "no cuda:2 here; this machine has 2 visible GPU(s), cuda:0 to cuda:1"),
        ("cuda:0,cuda:1", 0, "no CUDA device is visible on this machine"),
        ("cuda", 0, "no CUDA device is visible on this machine"),
    ],
)
def test_wrong_devices_are_one_line_usage_errors(spec, visible, message):
    with pytest.raises(UsageError) as error:
        assign_devices(spec, 2, visible)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_devices_and_a_non_gpu_device_disagree():
    assert worker_devices(None, 3, "cpu") == [None, None, None]
    with pytest.raises(UsageError, match="--device cpu and --devices auto disagree"):
        worker_devices("auto", 2, "cpu")


def test_each_local_worker_process_gets_its_own_gpu():
    # --workers 2 --devices cuda:0,cuda:1: this process trains on cuda:0; the one it starts sees only GPU 1.
    devices = assign_devices("cuda:0,cuda:1", 2, 2)
    assert devices[0] == "cuda:0"
    (child,) = worker_launches("s", "/runs", "sqlite:///x.db", 4, Heartbeat(), devices[1:], {"PATH": "/bin"})
    assert child.env == {"PATH": "/bin", "HPSEARCH_STORAGE": "sqlite:///x.db", "CUDA_VISIBLE_DEVICES": "1", "OMP_NUM_THREADS": "4"}
    assert child.command[-2:] == ["--device", "cuda"]  # inside it, cuda is its own GPU
    # Four workers on two GPUs, and a scheduler's CUDA_VISIBLE_DEVICES, which renumbers them.
    devices = assign_devices("auto", 4, 2)
    children = worker_launches("s", "/runs", "sqlite:///x.db", 1, Heartbeat(), devices[1:], {"CUDA_VISIBLE_DEVICES": "4,6"})
    assert [c.env["CUDA_VISIBLE_DEVICES"] for c in children] == ["6", "4", "6"]
    # No GPU: every worker on the study's device, the environment untouched.
    children = worker_launches("s", "/runs", "sqlite:///x.db", 1, Heartbeat(), assign_devices("auto", 3, 0)[1:], {})
    assert all("CUDA_VISIBLE_DEVICES" not in c.env and "--device" not in c.command for c in children)


def test_each_local_worker_process_gets_its_share_of_the_cores_for_blas_too():
    # numpy's BLAS pool (the GP sampler's) is sized by OMP_NUM_THREADS when the process starts;
    # at a thread per core in every worker it oversubscribed two cores (benchmarks/worker_throughput.py --sampler gp).
    children = worker_launches("s", "/runs", "sqlite:///x.db", 3, Heartbeat(), [None, None], {})
    assert [c.env["OMP_NUM_THREADS"] for c in children] == ["3", "3"]
    assert all(c.command[c.command.index("--threads") + 1] == "3" for c in children)
    # The user's own setting wins.
    (child,) = worker_launches("s", "/runs", "sqlite:///x.db", 3, Heartbeat(), [None], {"OMP_NUM_THREADS": "8"})
    assert child.env["OMP_NUM_THREADS"] == "8"


# Stands in for `hpsearch worker` in the next test: a real process that writes down what it was given.
REPORT_ENVIRONMENT = """
import json, os, sys
with open(sys.argv[1], "w") as out:
    json.dump({"argv": sys.argv[2:], "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}, out)
"""


def test_the_processes_run_local_workers_starts_get_their_devices(tmp_path, monkeypatch):
    started = []
    real_popen = subprocess.Popen

    def report_instead(command, env):
        out = tmp_path / f"worker{len(started)}.json"
        started.append(out)
        return real_popen([sys.executable, "-c", REPORT_ENVIRONMENT, str(out), *command], env=env)

    monkeypatch.setattr(workers.subprocess, "Popen", report_instead)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    spec = StudySpec(models=("tfn_classifier",), sweep=("embed_dim:4",), task_options={"dataset_size": 20, "seq_len": 4},
                     train={"epochs": 1}, output_dir=str(tmp_path), study_name="gpus")
    orchestrator = Orchestrator(resolve(spec), echo=lambda line: None, progress=False)
    # This process keeps its own device (the first entry): the machine has no GPU to train on.
    outcome = workers.run_local_workers(orchestrator, 3, [None, "cuda:1", "cuda:0"])
    assert outcome.trials_run == 1
    seen = [json.loads(out.read_text()) for out in started]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in seen] == ["1", "0"]
    assert all(s["argv"][-2:] == ["--device", "cuda"] and "worker" in s["argv"] for s in seen)


def test_asking_for_gpus_without_one_is_one_line_and_writes_nothing(tmp_path, run_hpsearch):
    if workers.visible_gpus():
        pytest.skip("this machine has a GPU")
    result = run_hpsearch(*TRIVIAL, "--n-trials", "2", "--workers", "2", "--devices", "cuda:0,cuda:1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "hpsearch: error: --devices cuda:0,cuda:1: no CUDA device is visible on this machine; use --devices auto or leave it out"
    ]
    assert list(tmp_path.iterdir()) == []  # no hpsearch.db
    for device in ("cuda", "cuda:1"):
        result = run_hpsearch("worker", "--study", "s", "--device", device)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "no CUDA device is available" in result.stderr
    assert list(tmp_path.iterdir()) == []
