"""The objective on an in-memory study and recorder: what a trial carries however it ends."""

import os
import signal
import uuid

import optuna
import pytest
from torch import nn

from hpsearch.models import HyperParam, register_model
from hpsearch.search.objective import Objective
from hpsearch.search.signals import Interrupted, graceful_interrupts
from hpsearch.search.spec import StudySpec, resolve
from hpsearch.storage.recorder import MemoryRecorder

# What the model's build does on a real (not meta) device: "signal" sends this process SIGTERM.
ON_BUILD: list[str] = []


def build(data, width):
    model = nn.Sequential(
        nn.Embedding(data.vocab_size, width), nn.Flatten(), nn.Linear(width * data.seq_len, data.num_outputs)
    )
    if model[0].weight.device.type != "meta" and ON_BUILD:
        if ON_BUILD[0] == "signal":
            os.kill(os.getpid(), signal.SIGTERM)
        raise RuntimeError("the GPU is gone")
    return model


# Registered by the tests that use it, not at import: the zoo's tests list the models at collection.
MODEL = f"objective_test_{uuid.uuid4().hex[:8]}"


def run_one_trial(tmp_path, on_build: str | None) -> optuna.trial.FrozenTrial:
    register_model(MODEL, build, [HyperParam("width", "int", 4, "embedding width", low=1)])
    spec = StudySpec(
        models=(MODEL,),
        sweep=("width:4",),
        task_options={"dataset_size": 64},
        train={"epochs": 1},
        output_dir=str(tmp_path),
    )
    objective = Objective(resolve(spec), MemoryRecorder(), echo=lambda _line: None)
    study = optuna.create_study()
    ON_BUILD[:] = [on_build] if on_build else []
    try:
        with graceful_interrupts():
            study.optimize(objective, n_trials=1, catch=(Exception,))
    except Interrupted:
        pass  # Optuna re-raises the signal once the trial is told FAIL
    finally:
        ON_BUILD.clear()
    (trial,) = study.trials
    return trial


@pytest.mark.parametrize(
    ("on_build", "reason"),
    [("signal", "interrupted by SIGTERM after 0 epochs"), ("error", "RuntimeError: the GPU is gone")],
)
def test_a_trial_stopped_before_it_trains_says_why(tmp_path, on_build, reason):
    trial = run_one_trial(tmp_path, on_build)
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == reason


def test_a_trial_that_trains_has_no_fail_reason(tmp_path):
    trial = run_one_trial(tmp_path, None)
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert "fail_reason" not in trial.user_attrs and trial.user_attrs["epochs_run"] == 1
