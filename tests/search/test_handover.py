"""What an error that stopped a trial means for it: what it raises, what it records, whether it is queued again."""

import errno

import optuna
import pytest

from hpsearch.search.handover import Stop, TrialHandover
from hpsearch.search.recording import TrialAbandoned
from hpsearch.search.signals import Interrupted, Preempted
from hpsearch.storage.errors import DiskFullError
from hpsearch.storage.recorder import MemoryRecorder
from hpsearch.storage.retry import DatabaseUnavailable
from hpsearch.trainers.trainer import DivergenceError


def stopped_training(error: BaseException, echoed: list[str] | None = None) -> Stop:
    """``training_stopped`` for ``error`` as the objective calls it: while handling it, trial 3 after 2 epochs."""
    handover = TrialHandover(MemoryRecorder(), "out", None, (echoed if echoed is not None else []).append)
    try:
        raise error
    except type(error) as caught:
        return handover.training_stopped(3, caught, 2, "/ckpt/trial-3")


def test_a_diverged_trial_is_pruned_and_says_where():
    stop = stopped_training(DivergenceError("loss is nan at step 7"))
    assert isinstance(stop.raises, optuna.TrialPruned) and str(stop.raises) == "loss is nan at step 7"
    assert stop.cause is None and stop.reason == ("prune_reason", "loss is nan at step 7") and not stop.abandoned


def test_a_pruned_trial_says_why():
    pruned = optuna.TrialPruned("val_loss above the median at epoch 2")
    assert stopped_training(pruned) == Stop(pruned, reason=("prune_reason", "val_loss above the median at epoch 2"))


@pytest.mark.parametrize(
    "error",
    [DatabaseUnavailable("sqlite:///x.db", 600, "locked", final=True), TrialAbandoned(3, "heartbeat not stored")],
)
def test_a_trial_no_longer_this_workers_records_nothing(error):
    assert stopped_training(error) == Stop(error, abandoned=True)


def test_a_checkpoint_that_meets_a_full_disk_fails_the_trial_as_a_full_disk():
    written = RuntimeError("PytorchStreamWriter failed writing file data/0")
    written.__cause__ = OSError(errno.ENOSPC, "No space left on device")  # as torch.save reports it
    stop = stopped_training(written)
    assert isinstance(stop.raises, DiskFullError) and stop.cause is written
    full = "no space left on /ckpt/trial-3 while saving the checkpoint of trial 3"
    assert stop.reason == ("fail_reason", f"{full} after 2 epochs")


@pytest.mark.parametrize("error", [Preempted("SIGTERM"), DiskFullError("/db", "writing epoch 2")])
def test_a_preempted_or_full_disk_trial_says_so_without_a_traceback(error):
    echoed: list[str] = []
    stop = stopped_training(error, echoed)
    assert stop == Stop(error, reason=("fail_reason", f"{error} after 2 epochs")) and echoed == []


def test_an_error_fails_the_trial_with_its_traceback_echoed():
    echoed: list[str] = []
    error = ValueError("bad batch")
    stop = stopped_training(error, echoed)
    assert stop == Stop(error, reason=("fail_reason", "ValueError: bad batch"))
    assert echoed and "Traceback" in echoed[0] and "ValueError: bad batch" in echoed[0]


def test_a_signal_whose_cleanup_raised_is_raised_as_that_signal():
    cleanup = RuntimeError("cannot release un-acquired lock")
    cleanup.__context__ = Interrupted("SIGINT")
    stop = stopped_training(cleanup)
    assert stop.raises is cleanup.__context__ and stop.cause is None
    assert stop.reason == ("fail_reason", "interrupted by SIGINT after 2 epochs")


def test_a_database_gone_past_its_timeout_abandons_the_trial_and_a_shorter_outage_passes():
    handover = TrialHandover(MemoryRecorder(), "out", None, print)
    trial = optuna.create_study().ask()
    gone = DatabaseUnavailable("sqlite:///x.db", 600, "locked", final=True)
    abandoned = handover.trial_stopped(trial, gone)
    assert isinstance(abandoned, TrialAbandoned) and abandoned.error is gone and not abandoned.handed_back
    brief = DatabaseUnavailable("sqlite:///x.db", 5, "locked", final=False)
    assert handover.trial_stopped(trial, brief) is brief


def test_a_resumed_trial_keeps_the_best_checkpoint_of_the_trial_it_took_over(tmp_path):
    # The killed trial's best epoch is behind the retry; the trainer writes best.pt only when an epoch
    # beats it, so without the carried file the retry's folder would have none for load_model.
    from types import SimpleNamespace

    from hpsearch.search.checkpoint_sync import ResumePoint
    from hpsearch.trainers.checkpoints import CheckpointStore

    source = CheckpointStore(tmp_path / "trial-0")
    source.save({"epoch": 1}, is_best=True)
    source.save({"epoch": 2}, is_best=False)
    own = tmp_path / "trial-1"
    plan = SimpleNamespace(config=SimpleNamespace(checkpoint_dir=str(own), checkpoints="all"))
    handover = TrialHandover(MemoryRecorder(), str(tmp_path), None, print)
    handover.carry_best(ResumePoint(path=source.last_path), plan)
    assert (own / "best.pt").read_bytes() == source.best_path.read_bytes()
    assert not (own / "last.pt").exists()  # the trainer writes its own from the next epoch

    for keep in ("last", "none"):  # a study that keeps no best.pt gets none
        plan = SimpleNamespace(config=SimpleNamespace(checkpoint_dir=str(tmp_path / keep), checkpoints=keep))
        handover.carry_best(ResumePoint(path=source.last_path), plan)
        assert not (tmp_path / keep / "best.pt").exists()


def test_a_checkpoint_fetched_from_the_store_comes_with_its_trials_best(tmp_path):
    from hpsearch.search.checkpoint_sync import ResumeCandidates, artifact_key
    from hpsearch.storage.artifacts import CheckpointArchive

    archive = CheckpointArchive.open(f"file://{tmp_path / 'store'}")
    for name in ("last.pt", "best.pt"):
        (tmp_path / name).write_bytes(name.encode())
        archive.upload(tmp_path / name, artifact_key("s", 0, name))
    candidates = ResumeCandidates(str(tmp_path / "machine-b"), "s", [0], archive)
    (fetched,) = list(candidates)
    assert fetched.read_bytes() == b"last.pt" and (fetched.parent / "best.pt").read_bytes() == b"best.pt"
