"""The objective on an in-memory study and recorder: what a trial carries however it ends."""

import os
import signal
import uuid

import optuna
import pytest
from torch import nn

from hpsearch.models import HyperParam, register_model
from hpsearch.search.objective import Objective
from hpsearch.search.resolved import resolve
from hpsearch.search.signals import Interrupted, graceful_interrupts
from hpsearch.search.spec import StudySpec
from hpsearch.storage.attributes import LR_FALLBACK_ATTR, LR_SUGGESTED_ATTR
from hpsearch.storage.recorder import MemoryRecorder
from hpsearch.trainers import lr_finder, step_speed

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


def run_trials(tmp_path, sweep: tuple[str, ...], **train) -> list[optuna.trial.FrozenTrial]:
    """A grid of ``MODEL`` trials through the objective, in order; ``train`` overrides trainer settings."""
    register_model(MODEL, build, [HyperParam("width", "int", 4, "embedding width", low=1)])
    spec = StudySpec(
        models=(MODEL,),
        sweep=sweep,
        task_options={"dataset_size": 64},
        train={"epochs": 1, **train},
        output_dir=str(tmp_path),
    )
    resolved = resolve(spec)
    objective = Objective(resolved, MemoryRecorder(), echo=lambda _line: None)
    study = optuna.create_study()
    points = resolved.sweep.grid_points()
    for point in points:
        study.enqueue_trial(point)
    study.optimize(objective, n_trials=len(points))
    return sorted(study.trials, key=lambda t: (t.params["width"], t.params.get("lr", 0)))


def test_auto_times_each_model_once_and_records_the_speedup(tmp_path, machine_says_bf16, timed_steps, monkeypatch):
    timed = timed_steps
    trials = run_trials(tmp_path, ("width:4,8", "lr:1e-3,2e-3"))
    assert len(trials) == 4 and len(timed) == 2  # one timing per width; the lr does not change a step's cost
    for trial in trials:
        speedup = trial.user_attrs["precision.speedup"]
        chosen = "bf16" if speedup >= step_speed.SPEEDUP else "fp32"
        assert speedup > 0 and trial.user_attrs["precision"] == chosen
    assert trials[0].user_attrs["precision.speedup"] == trials[1].user_attrs["precision.speedup"]


def test_auto_that_times_fp32_faster_trains_exactly_as_fp32(tmp_path, machine_says_bf16, monkeypatch):
    monkeypatch.setattr(step_speed, "SPEEDUP", float("inf"))  # the steps are timed, and fp32 always wins
    (auto,) = run_trials(tmp_path / "auto", ("width:4",))
    (fp32,) = run_trials(tmp_path / "fp32", ("width:4",), precision="fp32")
    assert auto.user_attrs["precision"] == fp32.user_attrs["precision"] == "fp32"
    assert "precision.speedup" in auto.user_attrs and "precision.speedup" not in fp32.user_attrs
    assert auto.intermediate_values == fp32.intermediate_values and auto.value == fp32.value


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_explicit_precision_runs_as_given_untimed(tmp_path, machine_says_bf16, monkeypatch, precision):
    def refuse(*args, **kwargs):
        pytest.fail("timed the steps of an explicit precision")

    monkeypatch.setattr(step_speed, "measure_step_speed", refuse)
    (trial,) = run_trials(tmp_path, ("width:4",), precision=precision)
    assert trial.user_attrs["precision"] == precision and "precision.speedup" not in trial.user_attrs


def lr_auto_spec(name, builder, tmp_path) -> StudySpec:
    """One trial of ``builder`` registered as ``name``, its LR from the range test."""
    register_model(name, builder, [HyperParam("width", "int", 4, "embedding width", low=1)])
    return StudySpec(
        models=(name,),
        sweep=("width:4",),
        task_options={"dataset_size": 64},
        train={"epochs": 1, "lr": "auto", "precision": "fp32"},
        output_dir=str(tmp_path),
    )


def flat_build(data, width):
    """A model whose output, and so its loss, no LR can move: the range test finds no descent."""
    return nn.Sequential(
        nn.Embedding(data.vocab_size, width), nn.Flatten(), nn.Linear(width * data.seq_len, data.num_outputs),
        nn.Dropout(p=1.0),  # in training, every output is 0
    )


def test_a_trial_whose_range_test_suggests_nothing_trains_with_the_default_lr_and_says_so(tmp_path):
    """It trained with the range's first LR (1e-7), silently, where the loss never fell."""
    spec = lr_auto_spec(f"{MODEL}_flat", flat_build, tmp_path)
    lines: list[str] = []
    study = optuna.create_study()
    study.optimize(Objective(resolve(spec), MemoryRecorder(), echo=lines.append), n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and LR_SUGGESTED_ATTR not in trial.user_attrs
    fallback = trial.user_attrs[LR_FALLBACK_ATTR]
    assert "found no LR at which the loss falls" in fallback and "default lr=0.001" in fallback
    assert f"Trial 0: {fallback}" in lines
    assert max(trial.user_attrs["lr_history"]) == pytest.approx(1e-3)


def test_a_trial_that_carries_an_lr_suggestion_trains_with_it_untested(tmp_path, monkeypatch):
    """A retry of a --lr auto trial (its point queued again with its attributes) keeps the LR its first try found."""

    def refuse(*args, **kwargs):
        pytest.fail("ran the LR range test of a trial that carries its suggestion")

    monkeypatch.setattr(lr_finder, "find_lr", refuse)
    resolved = resolve(lr_auto_spec(MODEL, build, tmp_path))
    lines: list[str] = []
    study = optuna.create_study()
    study.enqueue_trial(resolved.sweep.grid_points()[0], user_attrs={LR_SUGGESTED_ATTR: 0.0123})
    study.optimize(Objective(resolved, MemoryRecorder(), echo=lines.append), n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.user_attrs[LR_SUGGESTED_ATTR] == 0.0123
    assert "Trial 0: LR range test suggests lr=0.0123" in lines
    assert 0 < max(trial.user_attrs["lr_history"]) <= 0.0123


def test_a_trial_that_diverges_after_reducing_its_lr_records_the_reductions(tmp_path):
    (trial,) = run_trials(tmp_path, ("width:4",), epochs=2, lr=1e6, optimizer="sgd", batch_size=4, grad_clip=0, warmup_epochs=0, divergence_factor=3,
                          on_divergence="reduce-lr", max_lr_reductions=2)
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["prune_reason"].endswith("(after 2 LR reductions)")
    # A finished trial kept them; a pruned one lost them, its prune_reason the only trace.
    assert len(trial.user_attrs["lr_reductions"]) == 2
