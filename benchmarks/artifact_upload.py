"""Checkpoint upload cost per epoch (``--artifacts``): the seed model's checkpoint sent to an S3 server and a file store.

``tfn_classifier`` (defaults) trains on ``synthetic_tokens`` (defaults) with checkpoints every
epoch, as a trial does. For each store (a local moto S3 server in its own process, reached over
HTTP; a ``file://`` folder) two figures per epoch, as a share of the epoch's own time:

* **synchronous**: the seconds ``CheckpointArchive.upload`` takes for the epoch's ``last.pt`` (and
  ``best.pt`` when it changed), had training waited for it;
* **background** (what hpsearch does, ``CheckpointUploads``): the seconds the training thread
  spends in the upload callback, plus the final flush spread over the epochs; the uploads
  themselves run beside the next epoch.

Goal: <= 5% of the epoch's time. A real S3 endpoint is farther than 127.0.0.1: the synchronous
figure grows with the network, the background one does not while an upload fits in an epoch.

    python benchmarks/artifact_upload.py            # 4 epochs
    python benchmarks/artifact_upload.py --epochs 2
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from hpsearch.models import build_model
from hpsearch.search.checkpoint_sync import CheckpointUploads
from hpsearch.storage.artifacts import CheckpointArchive
from hpsearch.trainers.config import TrainConfig
from hpsearch.trainers.records import EpochRecord
from hpsearch.trainers.tasks import build_task
from hpsearch.trainers.trainer import Trainer, seed_everything

GOAL = 0.05


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return server, endpoint
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("moto_server did not start")


def train(epochs: int, folder: Path, on_epoch: list) -> tuple[list[float], float]:
    """Epoch seconds of one run with checkpoints in ``folder``, and the whole fit's wall time."""
    task = build_task("synthetic_tokens", {})
    seed_everything(0)
    model = build_model("tfn_classifier", {}, task.data)
    config = TrainConfig(epochs=epochs, checkpoint_dir=str(folder), device="cpu")
    started = time.perf_counter()
    result = Trainer(model, task, config, on_epoch).fit()
    return [r.epoch_seconds for r in result.records], time.perf_counter() - started


def measure(name: str, archive: CheckpointArchive, epochs: int, work: Path) -> None:
    # Synchronous: each epoch's files uploaded in the callback, timed.
    folder = work / f"{name}-sync"
    sync: list[float] = []

    def upload_now(record: EpochRecord) -> None:
        started = time.perf_counter()
        for file in ("last.pt", "best.pt"):
            if (folder / file).exists():
                archive.upload(folder / file, f"bench/sync/{file}")
        sync.append(time.perf_counter() - started)

    epoch_seconds, _ = train(epochs, folder, [upload_now])
    size = (folder / "last.pt").stat().st_size
    # Background: what the objective does.
    folder = work / f"{name}-background"
    uploads = CheckpointUploads(archive, folder, "bench", 0)
    in_thread: list[float] = []

    def ask(record: EpochRecord) -> None:
        started = time.perf_counter()
        uploads.epoch_ended(record)
        in_thread.append(time.perf_counter() - started)

    background_epochs, _ = train(epochs, folder, [ask])
    started = time.perf_counter()
    uploads.flush()
    flush = time.perf_counter() - started
    uploads.close()
    epoch = statistics.median(epoch_seconds)
    sync_cost = statistics.median(sync)
    background_cost = statistics.median(in_thread) + flush / epochs
    background_epoch = statistics.median(background_epochs)
    print(f"{name:>5}: checkpoint {size / 1e6:.2f} MB, epoch {epoch:.2f} s | synchronous upload {sync_cost * 1e3:.0f} ms "
          f"= {sync_cost / epoch:.1%} of the epoch | background: {statistics.median(in_thread) * 1e6:.0f} us in the "
          f"callback + final flush {flush * 1e3:.0f} ms / {epochs} epochs = {background_cost / background_epoch:.2%} "
          f"of the epoch (goal <= {GOAL:.0%}: {'met' if background_cost / background_epoch <= GOAL else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    server, endpoint = start_moto()
    try:
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_ENDPOINT_URL": endpoint})
        import boto3

        boto3.session.Session().client("s3").create_bucket(Bucket="bench")
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            s3 = CheckpointArchive.open("s3://bench/runs")
            s3.check()
            measure("s3", s3, args.epochs, work)
            measure("file", CheckpointArchive.open(f"file://{work / 'store'}"), args.epochs, work)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
