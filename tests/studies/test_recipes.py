"""The cluster recipes in studies/recipes/: their worker commands and environments, run here as the recipes run them.

No Slurm or Kubernetes here: the Slurm batch script runs under bash with the variables Slurm
sets and a stand-in ``scontrol`` that records its arguments, and gets the signal its
``--signal`` line configures; the Kubernetes manifests' commands run with their Secrets resolved
to the test database, the test S3 server and a proxy on a free port.
"""

import os
import re
import shlex
import signal
import stat
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hpsearch.search.errors import EXIT_USAGE
from hpsearch.search.signals import EXIT_PREEMPTED
from hpsearch.storage.epoch_metrics import EpochMetricsTable
from tests.search.conftest import hpsearch_command
from tests.search.test_preemption import TINY
from tests.search.test_proxy_cli import free_port, running_proxy
from tests.search.test_workers import wait_for

RECIPES = Path(__file__).resolve().parents[2] / "studies" / "recipes"
SLURM = RECIPES / "slurm_worker_array.sbatch"
GRID = ["--param_sweep", "embed_dim:8,16", "pace_ms:150"]


@pytest.fixture
def study_name():
    """The study the Kubernetes recipe names, so that its exact command runs (the conftest's fixture, renamed)."""
    return "sweep1"


def sbatch_options(script: Path) -> dict[str, str]:
    """The ``#SBATCH --name=value`` lines of a batch script."""
    return dict(re.findall(r"^#SBATCH --([\w-]+)=?(\S*)", script.read_text(), flags=re.MULTILINE))


def environment(**values: str) -> dict[str, str]:
    """This process's environment, without a study database of its own, hpsearch on PATH, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}
    bin_dir = str(Path(hpsearch_command()[0]).parent)
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1", **values}


def fake_command(folder: Path, name: str, script: str) -> Path:
    """``folder/bin``, holding a shell script ``name`` that runs ``script``: put it first on PATH."""
    fake_bin = folder / "bin"
    fake_bin.mkdir(exist_ok=True)
    command = fake_bin / name
    command.write_text(f"#!/bin/sh\n{script}\n")
    command.chmod(command.stat().st_mode | stat.S_IEXEC)
    return fake_bin


def test_the_slurm_array_requeues_a_task_preempted_by_the_signal_it_configures(postgres_url, study_name, tmp_path, run_hpsearch):
    options = sbatch_options(SLURM)
    target, _, rest = options["signal"].partition(":")
    name, _, seconds = rest.partition("@")
    assert target == "B" and int(seconds) > 0 and "requeue" in options and options["array"]
    configured = signal.Signals[f"SIG{name}"]  # the signal Slurm sends to the batch shell

    created = run_hpsearch("create", "--study", study_name, "--storage", postgres_url, *TINY, *GRID)
    assert created.returncode == 0, created.stderr
    # scontrol, as the script calls it, records what it was asked.
    requeued = tmp_path / "requeued"
    fake_bin = fake_command(tmp_path, "scontrol", f"echo \"$@\" >> {shlex.quote(str(requeued))}")
    env = environment(HPSEARCH_STORAGE=postgres_url, STUDY=study_name, SLURM_JOB_ID="4243", SLURM_ARRAY_JOB_ID="4242",
                      SLURM_ARRAY_TASK_ID="3", SLURM_CPUS_PER_TASK="1")
    env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
    batch = subprocess.Popen(["bash", str(SLURM)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    table = EpochMetricsTable(postgres_url)
    wait_for(lambda: len(table.frame(study_name)) >= 1, 180, "a finished epoch")
    batch.send_signal(configured)
    _, err = batch.communicate(timeout=120)
    table.close()

    assert batch.returncode == EXIT_PREEMPTED, err
    assert requeued.read_text().split() == ["requeue", "4242_3"]  # the array task, not the whole array
    trials = optuna.load_study(study_name=study_name, storage=postgres_url).get_trials()
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert len(stopped) == 1 and stopped[0].user_attrs["fail_reason"].startswith("preempted by SIGTERM after ")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # Its retry waits in the queue for the requeued task.
    assert any(t.state == TrialState.WAITING and t.user_attrs.get("retry_of") == [stopped[0].number] for t in trials)


def test_the_slurm_array_needs_its_study_and_storage_and_says_so(tmp_path):
    result = subprocess.run(["bash", str(SLURM)], cwd=tmp_path, env=environment(), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0 and "export HPSEARCH_STORAGE=" in result.stderr


def test_the_slurm_array_sizes_each_workers_threads_by_its_cpus_and_takes_a_local_folder(tmp_path):
    # A stand-in hpsearch on PATH records the environment and command line the script gives it.
    seen = tmp_path / "seen"
    fake_bin = fake_command(tmp_path, "hpsearch", f"echo \"$OMP_NUM_THREADS $*\" > {shlex.quote(str(seen))}")

    def run(**values: str) -> list[str]:
        env = environment(HPSEARCH_STORAGE="sqlite:///unused.db", STUDY="s", SLURM_CPUS_PER_TASK="4", **values)
        env.pop("OMP_NUM_THREADS", None) if "OMP_NUM_THREADS" not in values else None
        env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
        result = subprocess.run(["bash", str(SLURM)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return seen.read_text().split()

    omp, *command = run()
    assert omp == "4" and command[command.index("--threads") + 1] == "4"
    omp, *_ = run(OMP_NUM_THREADS="2")  # the user's own setting wins
    assert omp == "2"
    assert "--output-dir" not in command  # the study's own folder, on a filesystem the nodes share
    _, *command = run(OUTPUT_DIR="/local/scratch/hp")  # a study with an artifact store: node-local checkpoints
    assert command[command.index("--output-dir") + 1] == "/local/scratch/hp"


def manifests(name: str) -> list[dict]:
    return list(yaml.safe_load_all((RECIPES / name).read_text()))


def container_env(container: dict, secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's variables, each ``secretKeyRef`` read from ``secrets`` as Kubernetes would."""
    env = {}
    for variable in container["env"]:
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        env[variable["name"]] = secrets[(ref["name"], ref["key"])] if ref else variable["value"]
    return env


def test_the_kubernetes_job_runs_behind_the_proxy_with_its_secrets_and_an_s3_store(
    postgres_url, study_name, s3_server, s3_bucket, tmp_path, run_hpsearch
):
    (job,) = manifests("kubernetes_worker_job.yaml")
    deployment, service = manifests("kubernetes_proxy.yaml")
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    by_exit_code = {rule["action"]: rule["onExitCodes"]["values"] for rule in job["spec"]["podFailurePolicy"]["rules"]
                    if "onExitCodes" in rule}
    assert by_exit_code == {"Ignore": [EXIT_PREEMPTED], "FailJob": [EXIT_USAGE]}
    pod = job["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    command = worker["command"]
    assert pod["terminationGracePeriodSeconds"] > float(command[command.index("--preempt-grace") + 1])

    # The proxy's Deployment, on a free port (its Service maps the one the workers use).
    (proxy,) = deployment["spec"]["template"]["spec"]["containers"]
    proxy_command = proxy["command"]
    service_port = service["spec"]["ports"][0]["port"]
    assert proxy_command[proxy_command.index("--port") + 1] == str(service_port)
    port = free_port()
    proxy_env = container_env(proxy, {("hpsearch-db", "url"): postgres_url})
    assert proxy_env == {"HPSEARCH_STORAGE": postgres_url}
    artifacts = f"s3://{s3_bucket}/hpsearch"
    created = run_hpsearch("create", "--study", study_name, "--storage", postgres_url, "--artifacts", artifacts,
                           *TINY, *GRID, "--epochs", "1", env=s3_server.env)
    assert created.returncode == 0, created.stderr
    # The proxy's grace is 3 s (running_proxy), the workers' the default 30 s with a beat every 10 s:
    # their trials, longer than 3 s, must not be failed as stale (the proxy goes by their declared grace).
    processes = proxy_command[proxy_command.index("--processes") + 1]
    assert processes == proxy["resources"]["requests"]["cpu"]  # a process per CPU: each serves one request at a time
    with running_proxy(proxy_env["HPSEARCH_STORAGE"], port, "--processes", processes):
        secrets = {
            ("hpsearch-storage", "url"): f"grpc://127.0.0.1:{port}",  # grpc://hpsearch-proxy:13000 in the cluster
            ("hpsearch-s3", "access-key-id"): s3_server.env["AWS_ACCESS_KEY_ID"],
            ("hpsearch-s3", "secret-access-key"): s3_server.env["AWS_SECRET_ACCESS_KEY"],
        }
        env = container_env(worker, secrets)
        assert set(env) >= {"HPSEARCH_STORAGE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
        assert env["OMP_NUM_THREADS"] == command[command.index("--threads") + 1]
        env["AWS_ENDPOINT_URL"] = s3_server.endpoint  # the recipe's commented MinIO line, pointed at the test server
        # The emptyDir volume, at its mount path in this test's folder.
        (mount,) = worker["volumeMounts"]
        scratch = tmp_path / "scratch"
        command = [str(scratch) if part == mount["mountPath"] else part for part in command]
        assert command[:2] == ["hpsearch", "worker"]
        result = subprocess.run([*hpsearch_command(), *command[1:]], cwd=tmp_path, env=environment(**env),
                                capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert command[command.index("--study") + 1] == study_name
    trials = optuna.load_study(study_name=study_name, storage=postgres_url).get_trials()
    assert trials and all(t.state == TrialState.COMPLETE for t in trials)
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert any(key.endswith("/last.pt") for key in keys)
