"""The worked examples in studies/: each runs from the CLI (a real subprocess) and from the Python API."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from sklearn.metrics import roc_auc_score

from hpsearch.search import load_model, search
from hpsearch.search.plugins import load_plugin, plugin_key
from hpsearch.storage import epochs_frame

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def study_of(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def where(tmp_path: Path) -> list[str]:
    return ["--storage", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", str(tmp_path), "--no-progress"]


def test_digits_cnn_reaches_90_percent_from_the_cli(run_hpsearch, tmp_path: Path) -> None:
    result = run_hpsearch("run", str(STUDIES / "digits_cnn.toml"), "--param-sweep", "channels:16 lr:1e-2",
                          "--epochs", "4", "--num-workers", "2", *where(tmp_path))
    assert result.returncode == 0, result.stderr
    study = study_of(f"sqlite:///{tmp_path / 'h.db'}", "digits_cnn")
    assert study.best_value >= 0.9, f"val_acc {study.best_value}"
    assert study.best_trial.user_attrs["flops.forward_passes"] > 0


def test_digits_cnn_from_python(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    study = search("digits_cnn", "digits", {"channels": [16], "lr": [1e-2]}, metric="val_acc", epochs=4,
                   plugins=[str(STUDIES / "digits_cnn.py")], storage=url, output_dir=tmp_path)
    assert study.best_value >= 0.9
    model = load_model(url, study.study_name)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_breast_cancer_auroc_from_the_cli(run_hpsearch, tmp_path: Path) -> None:
    result = run_hpsearch("run", str(STUDIES / "breast_cancer_mlp.toml"), "--n-trials", "2", "--epochs", "3", *where(tmp_path))
    assert result.returncode == 0, result.stderr
    study = study_of(f"sqlite:///{tmp_path / 'h.db'}", "breast_cancer_mlp")
    assert len(study.trials) == 2 and 0.5 < study.best_value <= 1.0


def test_breast_cancer_auroc_is_exactly_sklearns_from_python(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    # fp32: the scores below are recomputed in fp32, so autocast's bf16 would move the AUROC.
    study = search("tabular_mlp", "breast_cancer", ["hidden_size:32"], metric="val_auroc", epochs=3, batch_size=16,
                   plugins=[str(STUDIES / "breast_cancer_mlp.py")], storage=url, output_dir=tmp_path, precision="fp32")
    from hpsearch.trainers import build_task

    x_val, y_val = build_task("breast_cancer", {}).val
    model = load_model(url, study.study_name, checkpoint="last.pt")
    with torch.no_grad():
        scores = torch.sigmoid(model(x_val)).numpy()
    assert study.best_value == pytest.approx(roc_auc_score(y_val.numpy(), scores), abs=1e-6)


def test_a_custom_step_with_a_swept_aux_weight_from_the_cli(run_hpsearch, tmp_path: Path) -> None:
    result = run_hpsearch("run", str(STUDIES / "aux_loss.toml"), "--epochs", "2", *where(tmp_path))
    assert result.returncode == 0, result.stderr
    url = f"sqlite:///{tmp_path / 'h.db'}"
    trials = study_of(url, "aux_loss").trials
    assert sorted(t.params["aux_weight"] for t in trials) == [0.0, 0.3, 1.0]
    for trial in trials:
        # Every training step's forward pass, counted through the custom step: 2 epochs of 23 batches.
        assert trial.user_attrs["flops.train_step_total"] > 0
    epochs = epochs_frame(url, "aux_loss")
    assert {"train_parity_loss", "val_parity_loss", "train_digit_loss", "val_acc"} <= set(epochs.columns)


def test_a_custom_step_from_python(tmp_path: Path) -> None:
    study = search("two_head_mlp", "digits_parity", {"aux_weight": [0.0, 1.0]}, metric="val_acc", epochs=1,
                   plugins=[str(STUDIES / "aux_loss.py")], storage=f"sqlite:///{tmp_path / 'h.db'}", output_dir=tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


@pytest.fixture(scope="module")
def npy_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Loaded as the plugin it is, so the search below finds its registrations already made.
    module = load_plugin(plugin_key(str(STUDIES / "lazy_npy.py"), Path.cwd()))
    return module.write_examples(tmp_path_factory.mktemp("blobs"), 600)


def test_a_lazy_npy_dataset_with_two_loader_workers_from_the_cli(run_hpsearch, tmp_path: Path, npy_folder: Path) -> None:
    result = run_hpsearch("run", str(STUDIES / "lazy_npy.toml"), "--data", str(npy_folder), "--epochs", "2", *where(tmp_path))
    assert result.returncode == 0, result.stderr
    study = study_of(f"sqlite:///{tmp_path / 'h.db'}", "lazy_npy")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"] and study.best_value > 0.5


def test_a_lazy_npy_dataset_from_python(tmp_path: Path, npy_folder: Path) -> None:
    study = search("feature_mlp", "npy_folder", ["hidden_size:16"], task_options={"data": str(npy_folder)}, metric="val_acc",
                   epochs=2, lr=1e-2, num_workers=2, plugins=[str(STUDIES / "lazy_npy.py")],
                   storage=f"sqlite:///{tmp_path / 'h.db'}", output_dir=tmp_path)
    assert study.best_value > 0.5
