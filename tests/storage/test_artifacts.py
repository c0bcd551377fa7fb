"""``CheckpointArchive`` against a real S3-compatible server (moto's, on 127.0.0.1) and a real folder."""

from __future__ import annotations

import os
import threading
import time

import pytest

from hpsearch.storage.artifacts import ArtifactStoreError, ArtifactStoreUnavailable, CheckpointArchive
from tests.s3_server import MotoServer


@pytest.fixture(params=["file", "s3"])
def archive_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "file":
        return f"file://{tmp_path / 'store'}"
    return f"s3://{request.getfixturevalue('s3_bucket')}/runs/a"


def test_an_upload_is_downloaded_whole_and_a_missing_key_is_false(archive_url, tmp_path):
    archive = CheckpointArchive.open(archive_url)
    archive.check()
    source = tmp_path / "last.pt"
    source.write_bytes(os.urandom(3 << 20))
    archive.upload(source, "study/trial-0/last.pt")
    copy = tmp_path / "elsewhere" / "last.pt"
    assert archive.download("study/trial-0/last.pt", copy)
    assert copy.read_bytes() == source.read_bytes()
    assert not archive.download("study/trial-9/last.pt", tmp_path / "none.pt")
    assert not (tmp_path / "none.pt").exists()
    assert archive.uri("study/trial-0/last.pt") == f"{archive_url}/study/trial-0/last.pt"


def test_an_upload_under_the_same_key_replaces_the_object(archive_url, tmp_path):
    archive = CheckpointArchive.open(archive_url)
    source = tmp_path / "last.pt"
    for content in (b"epoch 1", b"epoch 2", b"epoch 2"):
        source.write_bytes(content)
        archive.upload(source, "s/trial-0/last.pt")
    assert archive.download("s/trial-0/last.pt", tmp_path / "got.pt")
    assert (tmp_path / "got.pt").read_bytes() == b"epoch 2"


def test_the_s3_objects_sit_under_the_prefix_one_per_key(s3_server, s3_bucket, tmp_path):
    archive = CheckpointArchive.open(f"s3://{s3_bucket}/runs/a")
    archive.check()  # its probe object is removed again
    source = tmp_path / "last.pt"
    for epoch in range(3):
        source.write_bytes(f"epoch {epoch}".encode())
        archive.upload(source, "s/trial-0/last.pt")
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["runs/a/s/trial-0/last.pt"]


def test_the_file_store_leaves_no_partial_files(tmp_path):
    archive = CheckpointArchive.open(f"file://{tmp_path / 'store'}")
    (tmp_path / "x").write_bytes(b"x")
    archive.upload(tmp_path / "x", "s/trial-1/best.pt")
    assert sorted(p.name for p in (tmp_path / "store" / "s" / "trial-1").iterdir()) == ["best.pt"]


@pytest.mark.parametrize("url, says", [
    ("ftp://host/x", "unsupported artifact store URL 'ftp://host/x'; use file:///absolute/path or s3://bucket/prefix"),
    ("/plain/path", "unsupported artifact store URL"),
    ("s3:///prefix", "names no bucket"),
    ("file://relative/path", "names a host"),
    ("s3://AKIAXYZ:supersecret@bucket/p", "holds credentials"),
])
def test_a_malformed_url_is_one_line(url, says):
    with pytest.raises(ArtifactStoreError) as raised:
        CheckpointArchive.open(url)
    assert says in str(raised.value) and "supersecret" not in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_bucket_is_found_by_the_check(s3_bucket):
    archive = CheckpointArchive.open("s3://no-such-bucket-here/p")
    with pytest.raises(ArtifactStoreError, match="no bucket 'no-such-bucket-here' there"):
        archive.check()


def without_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_missing_credentials_are_found_by_the_check(s3_bucket, monkeypatch, tmp_path):
    without_credentials(monkeypatch, tmp_path)
    with pytest.raises(ArtifactStoreError, match="no S3 credentials; set AWS_ACCESS_KEY_ID"):
        CheckpointArchive.open(f"s3://{s3_bucket}/p").check()
    # Half a key pair stops the client itself; the message names the store as given, prefix and all.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    with pytest.raises(ArtifactStoreError, match=f"^cannot use artifact store s3://{s3_bucket}/p: "):
        CheckpointArchive.open(f"s3://{s3_bucket}/p")


def test_a_reader_outside_a_run_gets_one_line_for_what_stops_it(s3_bucket, monkeypatch, tmp_path):
    archive = CheckpointArchive.open(f"s3://{s3_bucket}/p")
    (tmp_path / "x").write_bytes(b"x")
    archive.upload(tmp_path / "x", "s/trial-0/best.pt")
    assert archive.fetch("s/trial-0/best.pt", tmp_path / "back.pt") and (tmp_path / "back.pt").read_bytes() == b"x"
    assert not archive.fetch("s/trial-1/best.pt", tmp_path / "none.pt")
    without_credentials(monkeypatch, tmp_path)
    with pytest.raises(ArtifactStoreError, match=r"^cannot read s/trial-0/best.pt from artifact store s3://.*: no S3 credentials"):
        CheckpointArchive.open(f"s3://{s3_bucket}/p").fetch("s/trial-0/best.pt", tmp_path / "again.pt")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_is_found_by_the_check(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ArtifactStoreError, match="permission denied"):
            CheckpointArchive.open(f"file://{folder}").check()
    finally:
        folder.chmod(0o700)


def test_a_folder_under_a_file_is_found_by_the_check(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ArtifactStoreError, match="cannot use artifact store file://"):
        CheckpointArchive.open(f"file://{tmp_path / 'file' / 'store'}").check()


@pytest.fixture
def own_server(monkeypatch):
    """An S3 server of this test's own, which it may pause or stop; the AWS_* variables point at it."""
    server = MotoServer()
    try:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        yield server
    finally:
        server.stop()


def test_an_upload_rides_out_a_server_outage(tmp_path, own_server):
    """The server stops answering (SIGSTOP) for longer than a request's read timeout, then comes back."""
    server = own_server
    server.create_bucket("outage")
    lines: list[str] = []
    archive = CheckpointArchive.open("s3://outage/p", timeout=60, echo=lines.append)
    archive.check()
    source = tmp_path / "last.pt"
    source.write_bytes(os.urandom(1 << 20))
    server.pause()
    threading.Timer(13, server.resume).start()  # past the 10 s read timeout: a real failed request
    started = time.monotonic()
    archive.upload(source, "s/trial-0/last.pt")
    assert time.monotonic() - started >= 12
    assert archive.download("s/trial-0/last.pt", tmp_path / "back.pt")
    assert (tmp_path / "back.pt").read_bytes() == source.read_bytes()
    assert lines[0].startswith("artifact store s3://outage/p unavailable (") and "retrying the upload" in lines[0]
    assert lines[-1].startswith("artifact store s3://outage/p back after ")


def test_an_outage_past_the_timeout_is_unavailable(tmp_path, own_server):
    server = own_server
    server.create_bucket("gone")
    archive = CheckpointArchive.open("s3://gone/p", timeout=2)
    (tmp_path / "x").write_bytes(b"x")
    server.stop()
    with pytest.raises(ArtifactStoreUnavailable, match="has not answered for .*check that the S3 server at AWS_ENDPOINT_URL runs"):
        archive.upload(tmp_path / "x", "s/trial-0/last.pt")
    # To a reader it is one line that says so, not a run-time failure.
    with pytest.raises(ArtifactStoreError, match="has not answered for"):
        archive.fetch("s/trial-0/last.pt", tmp_path / "back.pt")
