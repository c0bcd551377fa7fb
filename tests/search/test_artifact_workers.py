"""Workers that share only PostgreSQL and an S3 server (moto's, real HTTP on 127.0.0.1): no common folder."""

from __future__ import annotations

import signal
import threading

import optuna
import pytest
import torch
from optuna.trial import TrialState

from hpsearch.search.api import load_model
from hpsearch.search.errors import UsageError
from hpsearch.search.audit import audit_epochs
from hpsearch.trainers.trainer import checkpoint_records
from tests.s3_server import MotoServer
from tests.search.test_preemption import TINY
from tests.search.test_workers import start_worker, wait_for

GRID = ["--param_sweep", "embed_dim:8,16", "pace_ms:150"]
BEAT = ["--heartbeat-interval", "1", "--grace-period", "3"]


def stored_keys(client, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def machines(tmp_path, *names):
    folders = [tmp_path / name for name in names]
    for folder in folders:
        folder.mkdir()
    return folders


def test_a_killed_workers_trial_resumes_on_another_machine_from_the_store(
    postgres_url, study_name, s3_server, s3_bucket, tmp_path, run_hpsearch, monkeypatch
):
    artifacts = f"s3://{s3_bucket}/runs"
    created = run_hpsearch("create", "--study", study_name, "--storage", postgres_url, "--artifacts", artifacts,
                           *TINY, *GRID)
    assert created.returncode == 0, created.stderr
    machine_a, machine_b, laptop = machines(tmp_path, "a", "b", "laptop")
    worker = ["--study", study_name, "--storage", postgres_url, "--output-dir", ".", *BEAT]
    client = s3_server.client()
    first = start_worker(*worker, cwd=machine_a)
    wait_for(lambda: any(k.endswith("/last.pt") for k in stored_keys(client, s3_bucket)), 120, "an uploaded epoch")
    first.send_signal(signal.SIGKILL)  # mid-trial: an epoch lasts about 1.5 s, and the first one was just uploaded
    first.communicate()
    second = start_worker(*worker, cwd=machine_b)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err

    trials = optuna.load_study(study_name=study_name, storage=postgres_url).get_trials(deepcopy=False)
    killed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(killed) == 1 and len(trials) == 3, [(t.number, t.state) for t in trials]
    (retry,) = [t for t in trials if t.number != killed[0].number and t.params == killed[0].params]
    assert retry.state == TrialState.COMPLETE
    resumed = retry.user_attrs["resumed_from"]
    # Machine b never had machine a's files: the checkpoint came from the store.
    assert resumed["checkpoint"] == f"{artifacts}/{study_name}/trial-{killed[0].number}/last.pt", resumed
    assert resumed["epoch"] >= 1
    assert f"resuming from {resumed['checkpoint']} after epoch {resumed['epoch']}" in out
    assert not (machine_b / "checkpoints" / study_name / f"trial-{killed[0].number}" / "prev.pt").exists()

    audit = audit_epochs(postgres_url, study_name, str(laptop))  # from the store alone
    assert (audit.trained_twice, audit.lost, audit.running, audit.finished) == (0, 0, 0, 2), audit

    # Bounded: at most last.pt and best.pt per trial, whatever the number of epochs, and the study's owner record.
    keys = stored_keys(client, s3_bucket)
    assert all(k.rsplit("/", 1)[1] in ("last.pt", "best.pt") for k in keys if "/trial-" in k), keys
    assert [k for k in keys if "/trial-" not in k] == [f"runs/{study_name}/study.json"], keys
    for trial in trials:
        assert len([k for k in keys if f"/trial-{trial.number}/" in k]) <= 2
        if trial.state == TrialState.COMPLETE:
            assert trial.user_attrs["artifacts"] == f"{artifacts}/{study_name}/trial-{trial.number}"

    # load_model on a third machine: the workers' folders are gone, the store has best.pt.
    for machine in (machine_a, machine_b):
        for path in sorted(machine.rglob("*.pt"), reverse=True):
            path.unlink()
    best = optuna.load_study(study_name=study_name, storage=postgres_url).best_trial
    monkeypatch.chdir(laptop)  # the later tests' subprocesses start where pytest started
    model = load_model(postgres_url, study_name)
    stored = laptop / "best.pt"
    client.download_file(s3_bucket, f"runs/{study_name}/trial-{best.number}/best.pt", str(stored))
    expected = torch.load(stored, weights_only=True)["model"]
    assert all(torch.equal(value, expected[name]) for name, value in model.state_dict().items())
    # Without credentials on that machine: one line that says so, not botocore's traceback.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.setenv(name, str(laptop / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(UsageError, match="no S3 credentials; set AWS_ACCESS_KEY_ID"):
        load_model(postgres_url, study_name)


def test_an_s3_outage_mid_run_loses_nothing(postgres_url, study_name, tmp_path, run_hpsearch, monkeypatch):
    """The S3 server stops answering for 20 s (SIGSTOP) while two workers train; both finish, every epoch stored."""
    server = MotoServer()
    try:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        server.create_bucket("outage")
        artifacts = "s3://outage/p"
        created = run_hpsearch("create", "--study", study_name, "--storage", postgres_url, "--artifacts", artifacts,
                               *TINY, *GRID)
        assert created.returncode == 0, created.stderr
        machine_a, machine_b, laptop = machines(tmp_path, "a", "b", "laptop")
        worker = ["--study", study_name, "--storage", postgres_url, "--output-dir", "."]
        client = server.client()
        workers = [start_worker(*worker, cwd=machine) for machine in (machine_a, machine_b)]
        wait_for(lambda: any(k.endswith("/last.pt") for k in stored_keys(client, "outage")), 120, "an uploaded epoch")
        server.pause()
        threading.Timer(20, server.resume).start()
        outputs = [w.communicate(timeout=300) for w in workers]
        for process, (out, err) in zip(workers, outputs):
            assert process.returncode == 0, err
        said = "".join(out + err for out, err in outputs)
        assert "artifact store s3://outage/p unavailable (" in said and "artifact store s3://outage/p back after" in said

        trials = optuna.load_study(study_name=study_name, storage=postgres_url).get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
        for trial in trials:  # each trial's stored last.pt holds all of its epochs
            fetched = laptop / f"{trial.number}.pt"
            client.download_file("outage", f"p/{study_name}/trial-{trial.number}/last.pt", str(fetched))
            assert [r.epoch for r in checkpoint_records(fetched)] == [1, 2, 3]
        audit = audit_epochs(postgres_url, study_name, str(laptop))
        assert (audit.trained_twice, audit.lost, audit.running, audit.finished) == (0, 0, 0, 2), audit
    finally:
        server.stop()


@pytest.mark.parametrize("case", ["scheme", "bucket", "credentials", "partial credentials"])
def test_a_wrong_artifact_store_is_one_line_before_anything_is_written(case, s3_bucket, tmp_path, run_hpsearch):
    url = {"scheme": "gs://bucket/p", "bucket": "s3://no-such-bucket/p"}.get(case, f"s3://{s3_bucket}/p")
    env = {}
    if case.endswith("credentials"):
        # Partial: a key id without its secret, which boto3 refuses as it builds the client, before any request.
        env = {"AWS_ACCESS_KEY_ID": "testing" if case.startswith("partial") else "", "AWS_SECRET_ACCESS_KEY": "",
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
               "AWS_EC2_METADATA_DISABLED": "true"}
    result = run_hpsearch("--models", "tfn_classifier", "--epochs", "1", "--dataset-size", "16", "--artifacts", url,
                          "--no-progress", env=env)
    says = {"scheme": "unsupported artifact store URL 'gs://bucket/p'", "bucket": "no bucket 'no-such-bucket' there",
            "credentials": "no S3 credentials; set AWS_ACCESS_KEY_ID",
            "partial credentials": "no S3 credentials; set AWS_ACCESS_KEY_ID"}[case]
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert not (tmp_path / "hpsearch.db").exists() and not (tmp_path / "checkpoints").exists()
    assert "testing-secret" not in result.stderr + result.stdout
