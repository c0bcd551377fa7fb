import pickle

import pytest
import torch

from hpsearch.trainers.checkpoints import CheckpointStore, load_checkpoint


def test_last_and_best_are_kept(tmp_path):
    store = CheckpointStore(tmp_path / "trial-0")
    assert store.load_last() is None
    store.save({"epoch": 1, "w": torch.ones(2)}, is_best=True)
    store.save({"epoch": 2, "w": torch.zeros(2)}, is_best=False)
    assert store.load_last()["epoch"] == 2
    assert load_checkpoint(store.best_path)["epoch"] == 1
    assert sorted(p.name for p in store.directory.iterdir()) == ["best.pt", "last.pt"]


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_loading_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
