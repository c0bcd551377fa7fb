"""``hpsearch proxy`` and workers behind it, as real processes on the real PostgreSQL server."""

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from hpsearch.storage.epoch_metrics import EpochMetricsTable
from tests.search.conftest import hpsearch_command
from tests.search.test_workers import epoch_lines, start_worker, wait_for

BEAT = ["--heartbeat-interval", "1", "--grace-period", "3"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_proxy(database_url: str, port: int, *extra: str, popen: dict | None = None):
    """An ``hpsearch proxy`` process serving ``database_url`` on 127.0.0.1:``port``; yields it once it answers.

    ``popen``: more arguments of ``subprocess.Popen``.
    """
    environment = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}
    proxy = subprocess.Popen([*hpsearch_command(), "proxy", "--storage", database_url, "--port", str(port), *BEAT, *extra],
                             env={**environment, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             **(popen or {}))
    try:
        wait_for(lambda: _answers(port) or proxy.poll() is not None, 60, "the proxy to listen")
        assert proxy.poll() is None, proxy.stdout.read()
        yield proxy
    finally:
        proxy.send_signal(signal.SIGINT)
        try:
            proxy.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_killed_workers_trial_behind_the_proxy_is_failed_by_the_proxy_and_resumed_by_another_worker(
    postgres_url, study_name, tmp_path, run_hpsearch
):
    slow = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:32", "--epochs", "6", "--dataset-size", "600",
            "--pruner", "none", "--no-progress", *BEAT]
    port = free_port()
    with running_proxy(postgres_url, port) as proxy:
        proxy_url = f"grpc://127.0.0.1:{port}"
        # The study is created through the proxy too (its queue lock travels through it).
        created = run_hpsearch("create", "--study", study_name, "--storage", proxy_url, *slow)
        assert created.returncode == 0, created.stderr
        doomed = start_worker("--study", study_name, "--storage", proxy_url, "--threads", "1", *BEAT, cwd=tmp_path)
        table = EpochMetricsTable(postgres_url)  # the epoch rows it sends through the proxy land in the database
        wait_for(lambda: len(table.frame(study_name)) >= 2, 180, "two finished epochs behind the proxy")
        doomed.send_signal(signal.SIGKILL)
        doomed_out, _ = doomed.communicate()
        (original,) = optuna.load_study(study_name=study_name, storage=postgres_url).get_trials()
        assert original.state == TrialState.RUNNING

        # Started at once: it finds nothing waiting, waits on the RUNNING trial, and takes its retry
        # once the proxy has failed it (the worker cannot read heartbeats; the proxy can).
        survivor = start_worker("--study", study_name, "--storage", proxy_url, "--threads", "1", *BEAT, cwd=tmp_path)
        survivor_out, survivor_err = survivor.communicate(timeout=300)
        assert survivor.returncode == 0, survivor_err
        assert "Traceback" not in survivor_err

    proxy_out = proxy.stdout.read()
    trials = optuna.load_study(study_name=study_name, storage=postgres_url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]  # none RUNNING, none lost
    failed, retried = trials
    # The worker named itself when it took the trial (the proxy's take names no one).
    assert failed.user_attrs["worker"].split(":")[1] == str(doomed.pid)
    assert retried.user_attrs["worker"].split(":")[1] == str(survivor.pid)
    reason = f"no heartbeat for over 3 s: its worker ({failed.user_attrs['worker']}) was killed or lost the database"
    assert f"Trial 0 failed: {reason}; queued again to resume from its checkpoint" in proxy_out
    assert failed.user_attrs["fail_reason"] == reason
    resumed_after = retried.user_attrs["resumed_from"]["epoch"]
    assert resumed_after >= 2
    # No epoch trained twice or lost: the killed worker trained 1..k, the survivor k+1..6. (The kill may
    # land between epoch k's checkpoint and its printed line.)
    printed = epoch_lines(doomed_out)
    assert printed == list(range(1, len(printed) + 1)) and len(printed) in (resumed_after - 1, resumed_after)
    assert epoch_lines(survivor_out) == list(range(resumed_after + 1, 7))
    rows = table.frame(study_name)
    assert sorted(rows[rows["number"] == retried.number]["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert retried.user_attrs["epochs_run"] == 6 and "flops.total" in retried.user_attrs  # the batched attributes
    table.close()


def test_the_proxy_masks_the_database_password_and_binds_to_this_machine(postgres_server):
    with_password = make_url(postgres_server).set(password="s3cr3t-word").render_as_string(hide_password=False)
    port = free_port()
    with running_proxy(with_password, port) as proxy:
        pass
    out = proxy.stdout.read()
    assert f"on grpc://127.0.0.1:{port}" in out and "***" in out
    assert "s3cr3t-word" not in out


def test_sigterm_stops_the_proxy_as_ctrl_c_does_with_exit_0(sqlite_url):
    # What Kubernetes (the recipe's Deployment), Slurm and systemd send a server they stop.
    with running_proxy(sqlite_url, free_port()) as proxy:
        proxy.send_signal(signal.SIGTERM)
        out, _ = proxy.communicate(timeout=20)
    assert proxy.returncode == 0, out
    assert out.strip().splitlines()[-1] == "hpsearch proxy: stopped (SIGTERM)"


def test_a_second_proxy_on_a_port_in_use_is_refused_in_one_line(postgres_server, run_hpsearch):
    # gRPC binds with SO_REUSEPORT: unchecked, a second proxy would share the port with the first.
    port = free_port()
    with running_proxy(postgres_server, port):
        result = run_hpsearch("proxy", "--storage", postgres_server, "--port", str(port))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"hpsearch: error: cannot listen on 127.0.0.1:{port} (")
    assert len(result.stderr.strip().splitlines()) == 1 and "serving" not in result.stdout


def listeners(port: int) -> set[int]:
    """The processes with a socket listening on ``port`` (read from /proc, as ``ss -ltnp`` does)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    found = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                found.add(int(fd_dir.parent.name))
        except OSError:  # a process that ended, or another user's
            continue
    return found


def test_a_proxy_of_several_processes_listens_in_each_and_sigterm_stops_them_all(postgres_url, study_name):
    port = free_port()
    with running_proxy(postgres_url, port, "--processes", "3") as proxy:
        wait_for(lambda: len(listeners(port)) == 3, 90, "three processes to listen")
        assert proxy.pid in listeners(port)
        clients = [optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port) for _ in range(6)]  # a connection each
        directions = [optuna.study.StudyDirection.MINIMIZE]
        study_ids = {client.create_new_study(directions, f"{study_name}-{i}") for i, client in enumerate(clients)}
        assert len(study_ids) == 6  # served, whichever process each connection reached
        proxy.send_signal(signal.SIGTERM)
        out, _ = proxy.communicate(timeout=30)
    assert proxy.returncode == 0, out
    assert "in 3 processes" in out and out.strip().splitlines()[-1] == "hpsearch proxy: stopped (SIGTERM)"
    assert "Warning" not in out and "Server started" not in out, out  # the others are as quiet as the first
    assert listeners(port) == set()  # the other two stopped with the first


def test_more_proxy_processes_than_cores_says_so_and_serves(sqlite_url):
    port = free_port()
    one_core = {"preexec_fn": lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})}
    with running_proxy(sqlite_url, port, "--processes", "2", popen=one_core) as proxy:
        wait_for(lambda: len(listeners(port)) == 2, 90, "two processes to listen")
        proxy.send_signal(signal.SIGTERM)
        out, _ = proxy.communicate(timeout=30)
    assert proxy.returncode == 0, out
    assert out.startswith("hpsearch proxy: --processes 2 is more than the 1 core(s) it may use here;"), out


def test_the_other_processes_of_a_proxy_stop_when_the_first_is_killed(sqlite_url):
    port = free_port()
    with running_proxy(sqlite_url, port, "--processes", "2") as proxy:
        wait_for(lambda: len(listeners(port)) == 2, 90, "two processes to listen")
        proxy.kill()  # kill -9: it cannot stop them itself
        wait_for(lambda: not listeners(port), 30, "the second process to stop")


def test_a_command_whose_proxy_does_not_answer_is_one_line_and_exit_2_and_a_worker_waits_its_db_timeout(
    tmp_path, run_hpsearch
):
    url = f"grpc://127.0.0.1:{free_port()}"
    result = run_hpsearch("create", "--study", "s", "--storage", url, "--models", "tfn_classifier")
    assert result.returncode == 2
    assert result.stderr.startswith("hpsearch: error: no storage proxy answers at grpc://127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1
    # A worker, as on a database URL: a job array may start it before its proxy.
    started = time.monotonic()
    result = run_hpsearch("worker", "--study", "s", "--storage", url, "--db-timeout", "4")
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith(f"storage proxy {url} unavailable (proxy: ") and "retrying for up to 4 s" in result.stdout
    assert result.stderr.startswith(f"hpsearch: error: the storage proxy {url} has not answered for 4 s")
    assert len(result.stderr.strip().splitlines()) == 1
    assert 4 <= time.monotonic() - started < 60


def test_a_worker_started_before_its_proxy_waits_for_it_and_runs(postgres_url, study_name, tmp_path, run_hpsearch):
    created = run_hpsearch("create", "--study", study_name, "--storage", postgres_url, *PACED, "--epochs", "1")
    assert created.returncode == 0, created.stderr
    port = free_port()
    worker = start_worker("--study", study_name, "--storage", f"grpc://127.0.0.1:{port}", *BEAT, cwd=tmp_path)
    time.sleep(3)
    assert worker.poll() is None  # still waiting
    with running_proxy(postgres_url, port):
        out, err = worker.communicate(timeout=120)
        # A study name the proxy's database lacks: the studies there, and how to list them (not through the proxy).
        lost = run_hpsearch("worker", "--study", "nope", "--storage", f"grpc://127.0.0.1:{port}")
    assert lost.returncode == 2 and len(lost.stderr.strip().splitlines()) == 1, lost.stderr
    assert study_name in lost.stderr and lost.stderr.strip().endswith("; hpsearch studies --storage DATABASE_URL lists them)")
    assert worker.returncode == 0, err
    assert f"storage proxy grpc://127.0.0.1:{port} unavailable" in out and "Traceback" not in err
    (trial,) = optuna.load_study(study_name=study_name, storage=postgres_url).get_trials()
    assert trial.state == TrialState.COMPLETE


def test_a_proxy_url_without_grpcio_names_the_extra_to_install(tmp_path):
    # grpc made unimportable in a real process, as on a machine without the extra.
    code = ("import sys; sys.modules['grpc'] = None; from hpsearch.search.cli import main; "
            "sys.exit(main(['worker', '--study', 's', '--storage', 'grpc://127.0.0.1:13000']))")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ('hpsearch: error: the storage proxy (grpc://) needs grpcio and protobuf: '
                                     'pip install "hpsearch[proxy]"')


def test_wrong_proxy_input_is_one_line_and_exit_2(run_hpsearch, sqlite_url, tmp_path):
    for args, message in [
        (["worker", "--study", "s", "--storage", "grpc://user:pw@127.0.0.1:13000"], "holds more than host and port"),
        (["proxy", "--storage", "grpc://127.0.0.1:13000"], "hpsearch proxy serves a database"),
        (["proxy", "--storage", sqlite_url, "--port", "0"], "--port must be between 1 and 65535"),
        (["proxy", "--storage", sqlite_url, "--processes", "0"], "--processes must be at least 1"),
        (["trials", "--study", "s", "--storage", "grpc://127.0.0.1:13000"], "this command reads the database itself"),
        (["proxy"], "no --storage given, $HPSEARCH_STORAGE unset and no hpsearch.db here: pass --storage URL"),
    ]:
        result = run_hpsearch(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "pw" not in result.stderr
    assert not (tmp_path / "hpsearch.db").exists(), "a proxy without --storage must not make a new, empty database"



PACED = ["--plugin", str(Path(__file__).with_name("paced_plugin.py")), "--models", "paced_classifier",
         "--param_sweep", "embed_dim:8", "pace_ms:150", "--epochs", "4", "--dataset-size", "64", "--batch-size", "8",
         "--seq-len", "8", "--pruner", "none", "--no-progress"]


def test_a_worker_rides_out_a_restart_of_its_proxy_and_stops_within_its_grace_when_told_to_during_one(
    sqlite_url, tmp_path, run_hpsearch
):
    # A grace period longer than the outage: the trial stays this worker's throughout.
    patient = ["--heartbeat-interval", "2", "--grace-period", "30"]
    port = free_port()
    assert run_hpsearch("create", "--study", "restart", "--storage", sqlite_url, *PACED).returncode == 0
    proxy_url = f"grpc://127.0.0.1:{port}"
    table = EpochMetricsTable(sqlite_url)
    with running_proxy(sqlite_url, port, *patient) as proxy:
        rides_out = start_worker("--study", "restart", "--storage", proxy_url, *patient, cwd=tmp_path)
        wait_for(lambda: len(table.frame("restart")) >= 1, 120, "an epoch behind the proxy")
        proxy.kill()  # the proxy dies mid-trial
        proxy.wait()
        time.sleep(2)
    with running_proxy(sqlite_url, port, *patient):  # and comes back on the same port
        out, err = rides_out.communicate(timeout=180)
    assert rides_out.returncode == 0, err
    assert f"storage proxy {proxy_url} unavailable (proxy: " in out and f"storage proxy {proxy_url} back after " in out
    (trial,) = optuna.load_study(study_name="restart", storage=sqlite_url).get_trials()
    assert trial.state == TrialState.COMPLETE and sorted(table.frame("restart")["epoch"]) == [1, 2, 3, 4]

    # Told to stop while its proxy is away: it waits for the proxy no longer than --preempt-grace.
    assert run_hpsearch("create", "--study", "stopped", "--storage", sqlite_url, *PACED).returncode == 0
    with running_proxy(sqlite_url, port, *patient) as proxy:
        stopped = start_worker("--study", "stopped", "--storage", proxy_url, "--preempt-grace", "3", *patient, cwd=tmp_path)
        wait_for(lambda: len(table.frame("stopped")) >= 1, 120, "an epoch behind the proxy")
        proxy.kill()
        proxy.wait()
        time.sleep(1)
        signalled = time.monotonic()
        stopped.send_signal(signal.SIGTERM)
        _, err = stopped.communicate(timeout=60)
    assert stopped.returncode == 143
    assert time.monotonic() - signalled < 15
    assert "hpsearch: preempted by SIGTERM while the storage proxy " + proxy_url in err
    table.close()


def test_a_proxy_started_before_its_database_waits_its_db_timeout_for_it(run_hpsearch):
    """A proxy Deployment started beside its database crash-looped: it gave up at once, where a worker waits."""
    started = time.monotonic()
    result = run_hpsearch("proxy", "--storage", f"postgresql://postgres@127.0.0.1:{free_port()}/none", "--db-timeout", "3",
                          "--port", str(free_port()))
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started >= 3
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("hpsearch: error: the database postgresql://postgres@127.0.0.1:")
    assert last.endswith("stopped after --db-timeout")
