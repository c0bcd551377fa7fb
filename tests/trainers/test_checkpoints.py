import os
import pickle

import pytest
import torch

from hpsearch.storage.errors import is_disk_full
from hpsearch.trainers.checkpoints import (
    CheckpointStore,
    check_training_state,
    first_readable,
    load_checkpoint,
)
from hpsearch.trainers.config import TrainConfig
from hpsearch.trainers.tasks import build_task
from hpsearch.trainers.trainer import Trainer, seed_everything


def test_last_previous_and_best_are_kept(tmp_path):
    store = CheckpointStore(tmp_path / "trial-0")
    assert store.load_last() is None
    store.save({"epoch": 1, "w": torch.ones(2)}, is_best=True)
    store.save({"epoch": 2, "w": torch.zeros(2)}, is_best=False)
    store.save({"epoch": 3, "w": torch.zeros(2)}, is_best=False)
    assert store.load_last()["epoch"] == 3
    assert load_checkpoint(store.previous_path)["epoch"] == 2
    assert load_checkpoint(store.best_path)["epoch"] == 1
    # No temporary file is left behind.
    assert sorted(p.name for p in store.directory.iterdir()) == ["best.pt", "last.pt", "prev.pt"]


@pytest.mark.parametrize(
    ("keep", "files", "returned"),
    [("last", ["last.pt", "prev.pt"], ["last.pt"] * 3), ("best", ["best.pt"], ["best.pt", None, "best.pt"])],
)
def test_only_the_checkpoints_asked_for_are_kept(tmp_path, keep, files, returned):
    store = CheckpointStore(tmp_path / "trial-0", keep)
    saved = [store.save({"epoch": e, "w": torch.ones(2)}, is_best=e != 2) for e in (1, 2, 3)]
    assert [p.name if p else None for p in saved] == returned
    assert sorted(p.name for p in store.directory.iterdir()) == files
    assert load_checkpoint(store.directory / files[0])["epoch"] == 3


def test_a_save_that_fails_while_writing_leaves_the_last_checkpoint_intact(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save({"epoch": 1}, is_best=False)

    class Unsaveable:
        def __reduce__(self):
            raise KeyboardInterrupt  # a signal arriving mid-write

    with pytest.raises(KeyboardInterrupt):
        store.save({"epoch": 2, "bad": Unsaveable()}, is_best=True)
    assert load_checkpoint(store.last_path) == {"epoch": 1}
    assert not store.previous_path.exists() and not store.best_path.exists()


def test_a_save_stopped_between_its_renames_keeps_last_pt(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    store.save({"epoch": 1}, is_best=False)
    renames = []
    real_replace = os.replace

    def replace_then_stop(source, destination):
        renames.append(os.path.basename(destination))
        real_replace(source, destination)
        if len(renames) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace_then_stop)
    with pytest.raises(KeyboardInterrupt):
        store.save({"epoch": 2}, is_best=False)
    monkeypatch.undo()
    # prev.pt is in place and last.pt never went missing: it is still the epoch-1 state.
    assert renames == ["prev.pt"] and load_checkpoint(store.last_path) == {"epoch": 1}
    assert load_checkpoint(store.previous_path) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["last.pt", "prev.pt"]


def test_unreadable_checkpoints_are_passed_over_with_the_file_and_the_cause(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save({"epoch": 1, "w": torch.ones(1000)}, is_best=False)
    store.save({"epoch": 2, "w": torch.ones(1000)}, is_best=False)
    size = store.last_path.stat().st_size
    with open(store.last_path, "r+b") as file:
        file.truncate(size // 2)
    found = first_readable(store.candidates())
    assert found.path == store.previous_path and found.state["epoch"] == 1
    (skipped,) = found.skipped
    assert skipped.path == store.last_path
    assert str(skipped).startswith(f"{store.last_path}: RuntimeError: PytorchStreamReader failed reading zip archive")
    assert str(skipped).endswith(f"({size // 2} bytes)")

    store.previous_path.write_bytes(b"")
    found = first_readable(store.candidates())
    assert found.path is None and found.state is None
    assert [str(s) for s in found.skipped][1] == f"{store.previous_path}: empty file (0 bytes)"


def test_missing_files_are_not_failures(tmp_path):
    found = first_readable([tmp_path / "last.pt", tmp_path / "prev.pt"])
    assert found.path is None and found.skipped == []


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_loading_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
    (skipped,) = first_readable([path]).skipped
    assert skipped.cause.startswith("UnpicklingError: Weights only load failed")


def test_foreign_checkpoints_are_refused(tmp_path):
    model = torch.nn.Linear(3, 2)
    state = {"model": model.state_dict(), "optimizer": {}, "scaler": {}, "rng": {}, "guard": {}, "progress": {}}
    check_training_state(state, model.state_dict())
    with pytest.raises(ValueError, match=r"not a training checkpoint \(no optimizer, scaler, rng, guard, progress\)"):
        check_training_state({"model": model.state_dict()})
    with pytest.raises(ValueError, match=r"not a training checkpoint \(holds a list\)"):
        check_training_state([1, 2])
    with pytest.raises(ValueError, match=r"checkpoint of another model \(2 tensors differ, e.g. bias\)"):
        check_training_state(state, torch.nn.Linear(3, 4).state_dict())


def test_resuming_from_the_previous_checkpoint_matches_the_uninterrupted_run(tmp_path):
    """A truncated last.pt costs an epoch of work, not exactness: prev.pt resumes exactly on CPU."""
    task = build_task("synthetic_tokens", {"dataset_size": 200})

    def model():
        return torch.nn.Sequential(torch.nn.Embedding(32, 8), torch.nn.Flatten(), torch.nn.Linear(8 * 32, 4))

    def losses(records):
        return [(r.epoch, r.lr, r.train_loss, r.val_loss, r.metrics) for r in records]

    seed_everything(0)
    whole = Trainer(model(), task, TrainConfig(epochs=3, checkpoint_dir=str(tmp_path / "whole"))).fit()
    last = tmp_path / "whole" / "last.pt"
    with open(last, "r+b") as file:
        file.truncate(last.stat().st_size // 3)
    found = first_readable(CheckpointStore(tmp_path / "whole").candidates())
    assert found.path == tmp_path / "whole" / "prev.pt" and found.state["progress"]["epoch"] == 2
    seed_everything(123)  # a fresh process would build the model from another seed; the checkpoint must win
    again = TrainConfig(epochs=3, checkpoint_dir=str(tmp_path / "again"))
    resumed = Trainer(model(), task, again).fit(resume_from=found.path)
    assert losses(resumed.records) == losses(whole.records)


@pytest.mark.parametrize("keep", ["all", "best"])
def test_a_save_on_a_full_disk_raises_enospc_and_leaves_the_complete_files_and_no_partial_one(small_disk, keep):
    store = CheckpointStore(small_disk.path / "trial-0", keep)
    store.save({"epoch": 1, "w": torch.ones(2)}, is_best=True)
    kept = sorted(p.name for p in store.directory.iterdir())
    small_disk.fill()
    with pytest.raises(Exception) as raised:  # torch.save's zip writer wraps the OSError in a RuntimeError
        store.save({"epoch": 2, "w": torch.zeros(100_000)}, is_best=True)
    assert is_disk_full(raised.value), repr(raised.value)
    assert sorted(p.name for p in store.directory.iterdir()) == kept  # no .partial file
    assert load_checkpoint(store.directory / kept[0])["epoch"] == 1
    small_disk.free()
    store.save({"epoch": 2, "w": torch.zeros(2)}, is_best=True)
    assert load_checkpoint(store.directory / kept[0])["epoch"] == 2


@pytest.mark.parametrize(("keep", "files"), [("all", ["best.pt", "last.pt", "prev.pt"]), ("last", ["last.pt", "prev.pt"])])
def test_adopt_copies_the_kept_files_of_another_trials_folder(tmp_path, keep, files):
    earlier = CheckpointStore(tmp_path / "trial-0")
    for epoch in (1, 2):
        earlier.save({"epoch": epoch, "w": torch.ones(2)}, is_best=epoch == 1)
    retry = CheckpointStore(tmp_path / "trial-1", keep)
    assert [p.name for p in retry.adopt(earlier.directory)] == [f for f in ("last.pt", "prev.pt", "best.pt") if f in files]
    assert sorted(p.name for p in retry.directory.iterdir()) == files  # no temporary file either
    assert [load_checkpoint(retry.directory / f)["epoch"] for f in files] == [{"best.pt": 1, "last.pt": 2, "prev.pt": 1}[f] for f in files]
