"""A stopped grid point resumes from its checkpoint on the re-run: the real CLI, real files, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from hpsearch.storage.epoch_metrics import EpochMetricsTable
from tests.search.conftest import hpsearch_command

EPOCHS = 4
# One grid point, about a second an epoch on two cores: long enough to stop it between epochs.
SEARCH = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:32", "--epochs", str(EPOCHS),
          "--dataset-size", "200", "--no-progress", "--pruner", "none", "--study-name", "stopped"]


def interrupt_once_written(cwd: Path, written: Path, search: list[str] = SEARCH) -> str:
    """Run the search, send SIGINT as soon as ``written`` exists, and return its stdout."""
    environment = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}
    process = subprocess.Popen([*hpsearch_command(), *search], cwd=cwd, env={**environment, "PYTHONUNBUFFERED": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not _in_place(written) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, f"the search was not stopped by SIGINT mid-trial:\n{out}\n{err}"
    assert err.strip().splitlines()[-1].endswith("the same command again resumes it from its last checkpoint"), err
    return out


def _in_place(path: Path) -> bool:
    """``path`` exists; for ``prev.pt``, also ``last.pt`` has moved on from it.

    A save links ``last.pt`` to ``prev.pt`` and only then replaces ``last.pt``: stopped in between,
    both name one file, and a test that truncates ``last.pt`` would truncate ``prev.pt`` too.
    """
    last = path.with_name("last.pt")
    return path.exists() and (path.name != "prev.pt" or (last.exists() and not os.path.samefile(path, last)))


def trials(tmp_path: Path) -> list[FrozenTrial]:
    return optuna.load_study(study_name="stopped", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}").get_trials()


def epoch_lines(text: str) -> list[int]:
    # "Trial 3 | Epoch 02 | Train Loss: ...": the epoch numbers, in the order printed.
    return [int(line.split(" | ")[1].split()[1]) for line in text.splitlines() if line.startswith("Trial ") and " | Epoch " in line]


def saved_epoch(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["progress"]["epoch"])


def assert_completed_every_epoch(tmp_path: Path, trial: FrozenTrial) -> None:
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == list(range(1, EPOCHS + 1))
    assert trial.user_attrs["epochs_run"] == EPOCHS and len(trial.user_attrs["lr_history"]) == EPOCHS
    table = EpochMetricsTable(f"sqlite:///{tmp_path / 'hpsearch.db'}")
    rows = table.frame("stopped")
    table.close()
    assert sorted(rows[rows["number"] == trial.number]["epoch"]) == list(range(1, EPOCHS + 1))


def test_a_sigint_stopped_grid_point_resumes_from_its_checkpoint_on_the_rerun(tmp_path, run_hpsearch):
    checkpoints = tmp_path / "checkpoints" / "stopped" / "trial-0"
    first_out = interrupt_once_written(tmp_path, checkpoints / "last.pt")
    (stopped,) = trials(tmp_path)
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs["fail_reason"].startswith("interrupted by SIGINT after ")
    checkpointed = saved_epoch(checkpoints / "last.pt")
    assert 1 <= checkpointed < EPOCHS

    rerun = run_hpsearch(*SEARCH)
    assert rerun.returncode == 0, rerun.stderr
    failed, resumed = trials(tmp_path)
    assert failed.number == stopped.number and failed.state == TrialState.FAIL
    assert resumed.params == stopped.params
    assert resumed.user_attrs["retry_of"] == [stopped.number]
    assert resumed.user_attrs["resumed_from"] == {"checkpoint": str(checkpoints / "last.pt"), "epoch": checkpointed}
    assert "checkpoint_fallback" not in resumed.user_attrs
    # No epoch trained twice and none lost: the stopped run trained 1..k, the re-run k+1..EPOCHS.
    trained_first, trained_again = epoch_lines(first_out), epoch_lines(rerun.stdout)
    assert trained_first == list(range(1, len(trained_first) + 1)) and len(trained_first) <= checkpointed
    assert trained_again == list(range(checkpointed + 1, EPOCHS + 1))
    assert_completed_every_epoch(tmp_path, resumed)


def test_a_sigint_stopped_sampled_trial_is_retried_with_its_parameters_from_its_checkpoint(tmp_path, run_hpsearch):
    sampled = [*SEARCH[:2], "--param_sweep", "embed_dim:16..48", *SEARCH[4:], "--sampler", "tpe", "--n-trials", "1"]
    checkpoints = tmp_path / "checkpoints" / "stopped" / "trial-0"
    interrupt_once_written(tmp_path, checkpoints / "last.pt", sampled)
    (stopped,) = trials(tmp_path)
    assert stopped.user_attrs["fail_reason"].startswith("interrupted by SIGINT after ")
    checkpointed = saved_epoch(checkpoints / "last.pt")

    rerun = run_hpsearch(*sampled)
    assert rerun.returncode == 0, rerun.stderr
    failed, resumed = trials(tmp_path)  # --n-trials 1: the retry is the one trial of this run
    assert resumed.params == stopped.params and resumed.user_attrs["retry_of"] == [stopped.number]
    assert resumed.user_attrs["resumed_from"] == {"checkpoint": str(checkpoints / "last.pt"), "epoch": checkpointed}
    assert_completed_every_epoch(tmp_path, resumed)

    # Retried once: a run with a larger budget samples a new trial (the same budget is spent already).
    again = run_hpsearch(*sampled[:-1], "2")
    assert again.returncode == 0, again.stderr
    assert "retry_of" not in trials(tmp_path)[2].user_attrs


def test_a_truncated_last_checkpoint_falls_back_to_the_previous_one(tmp_path, run_hpsearch):
    checkpoints = tmp_path / "checkpoints" / "stopped" / "trial-0"
    last, previous = checkpoints / "last.pt", checkpoints / "prev.pt"
    interrupt_once_written(tmp_path, previous)  # prev.pt appears with the second epoch's checkpoint
    previous_epoch = saved_epoch(previous)
    with open(last, "r+b") as file:  # a write cut short, as a full disk or a crashed NFS client leaves it
        file.truncate(last.stat().st_size // 2)

    rerun = run_hpsearch(*SEARCH)
    assert rerun.returncode == 0, rerun.stderr
    _, resumed = trials(tmp_path)
    assert resumed.user_attrs["resumed_from"] == {"checkpoint": str(previous), "epoch": previous_epoch}
    fallback = resumed.user_attrs["checkpoint_fallback"]
    assert fallback.startswith(f"unreadable checkpoint {last}: RuntimeError: ")
    assert "zip archive" in fallback and f"({last.stat().st_size} bytes)" in fallback
    assert fallback.endswith(f"; resumed from {previous}")
    assert epoch_lines(rerun.stdout) == list(range(previous_epoch + 1, EPOCHS + 1))
    assert_completed_every_epoch(tmp_path, resumed)


def test_with_no_readable_checkpoint_the_grid_point_starts_fresh_and_says_why(tmp_path, run_hpsearch):
    checkpoints = tmp_path / "checkpoints" / "stopped" / "trial-0"
    last, previous = checkpoints / "last.pt", checkpoints / "prev.pt"
    interrupt_once_written(tmp_path, previous)
    last.write_bytes(b"")
    torch.save({"weights": torch.ones(3)}, previous)  # a real torch file, but no training state

    rerun = run_hpsearch(*SEARCH)
    assert rerun.returncode == 0, rerun.stderr
    _, fresh = trials(tmp_path)
    assert "resumed_from" not in fresh.user_attrs
    assert fresh.user_attrs["checkpoint_fallback"] == (
        f"unreadable checkpoint {last}: empty file (0 bytes); "
        f"unreadable checkpoint {previous}: "
        "not a training checkpoint (no model, optimizer, scaler, rng, guard, progress); "
        "started fresh from epoch 1"
    )
    assert epoch_lines(rerun.stdout) == list(range(1, EPOCHS + 1))
    assert_completed_every_epoch(tmp_path, fresh)
