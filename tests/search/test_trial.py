"""The trial plan: where a trial keeps its checkpoints, and the run it prepares for the objective to fit.

A study's name is a name, not a path: checkpoints stay inside the output directory, one folder a
study. A prepared run decides its precision, meters its FLOPs and takes the LR range test's
suggestion, sharing what one plan measured with the plans that would measure the same.
"""

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hpsearch.search.resolved import resolve
from hpsearch.search.spec import StudySpec
from hpsearch.search.trial import PreparedRun, SharedMeasurements, TrialPlan, checkpoint_dir, study_folder
from hpsearch.trainers import lr_finder, step_speed
from tests.search.conftest import TINY

ONE_POINT = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:32", "--epochs", "1", *TINY[2:]]

READ_CHECKPOINTS = """
import json, sys, optuna
names = sys.argv[2:]
print(json.dumps({n: [t.user_attrs.get("checkpoint") for t in optuna.load_study(study_name=n, storage=sys.argv[1]).trials] for n in names}))
"""


@pytest.mark.parametrize("name", ["../x", "/etc/x", ".", "..", "./s", "a/b", "s" * 300, "x\n", "~", ""])
def test_every_name_is_one_path_component_inside_checkpoints(tmp_path, name):
    folder = study_folder(name)
    assert "/" not in folder and folder not in ("", ".", "..") and len(folder) <= 100
    place = checkpoint_dir(str(tmp_path), name, 0)
    assert place.parent.parent == (tmp_path / "checkpoints").resolve()


def test_plain_names_keep_their_folder_and_no_two_names_share_one():
    assert study_folder("tfn_classifier+cnn-synthetic_tokens") == "tfn_classifier+cnn-synthetic_tokens"
    names = ["s", "./s", "s/", "_s", ".s", "s~", "../s", "s" * 300, "s" * 301]
    assert len({study_folder(n) for n in names}) == len(names)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_hostile_study_names_write_nothing_outside_the_output_directory(tmp_path, run_hpsearch, backend, request):
    url = request.getfixturevalue(f"{backend}_url")
    names = ["../x", str(tmp_path / "abs"), ".", "..", "s", "./s", "n" * 300]
    try:
        for name in names:
            run = run_hpsearch(*ONE_POINT, "--storage", url, "--output-dir", "out", "--study-name", name)
            assert run.returncode == 0, (name, run.stderr)

        too_long = run_hpsearch(*ONE_POINT, "--storage", url, "--output-dir", "out", "--study-name", "m" * 10_000)
        assert too_long.returncode == 2
        assert too_long.stderr.strip().splitlines() == [
            "hpsearch: error: the study name is 10,000 characters; the study database stores at most 512"
        ]

        written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
        assert written <= {"out", "hpsearch.db", "hpsearch.db-wal", "hpsearch.db-shm", "hpsearch.db.queue-lock"}, written
        read = subprocess.run(
            [sys.executable, "-c", READ_CHECKPOINTS, url, *names], capture_output=True, text=True, check=True
        )
        checkpoints = json.loads(read.stdout)
        folders = set()
        for name in names:
            (saved,) = checkpoints[name]
            assert Path(saved).parent.parent.parent == (tmp_path / "out" / "checkpoints").resolve(), (name, saved)
            assert Path(saved).exists()
            folders.add(Path(saved).parent)
        assert len(folders) == len(names)  # s and ./s no longer share weights
    finally:
        if backend == "postgres":
            from hpsearch.storage.epoch_metrics import delete_study

            for name in names:
                with contextlib.suppress(Exception):  # a study an assertion stopped before creating
                    delete_study(url, name)


def prepared(
    point: dict, measured: SharedMeasurements, lr_finder: bool = False, suggested_lr: float | None = None, **train
) -> PreparedRun:
    """The run of a small ``tfn_classifier`` at ``point`` (its embedding width, trainer settings), on 64 examples."""
    resolved = resolve(StudySpec(models=("tfn_classifier",), task_options={"dataset_size": 64}, train=train))
    plan = TrialPlan.from_point(
        {"model": "tfn_classifier", **point}, resolved.train_config, (p.name for p in resolved.task.step_params)
    )
    return plan.prepare(resolved.task, plan.initial_model(resolved.task), measured, lr_finder, suggested_lr)


def test_the_initial_model_is_the_same_on_every_run_of_a_plan():
    resolved = resolve(StudySpec(models=("tfn_classifier",), task_options={"dataset_size": 64}))
    plan = TrialPlan.from_point({"model": "tfn_classifier", "embed_dim": 16}, resolved.train_config)
    first, again = plan.initial_model(resolved.task).state_dict(), plan.initial_model(resolved.task).state_dict()
    assert all(torch.equal(first[name], again[name]) for name in first)


@pytest.mark.parametrize(("speedup", "chosen"), [(0.0, "bf16"), (float("inf"), "fp32")])
def test_auto_times_each_step_cost_once_and_the_run_trains_and_records_what_it_chose(
    machine_says_bf16, timed_steps, monkeypatch, speedup, chosen
):
    monkeypatch.setattr(step_speed, "SPEEDUP", speedup)  # the steps are timed, and this decides
    timed = timed_steps
    measured = SharedMeasurements()
    # The LR does not change what a step computes; the width does.
    runs = [prepared({"embed_dim": 16, "lr": lr}, measured) for lr in (1e-3, 2e-3)]
    wider = prepared({"embed_dim": 32, "lr": 1e-3}, measured)
    assert len(timed) == 2 and runs[0].timing is runs[1].timing is not wider.timing
    for run in (*runs, wider):
        attrs = run.attrs(None, trained=False)
        assert run.timing is not None and run.timing.chosen == chosen
        assert run.trainer.precision == run.trainer.config.precision == attrs["precision"] == chosen
        assert attrs["precision.speedup"] == round(run.timing.speedup, 3)


def test_an_explicit_precision_is_not_timed_and_records_no_speedup(machine_says_bf16):
    run = prepared({"embed_dim": 16}, SharedMeasurements(), precision="bf16")
    assert run.timing is None and run.trainer.precision == "bf16"
    attrs = run.attrs(None, trained=False)
    assert attrs["precision"] == "bf16" and "precision.speedup" not in attrs


def test_the_lr_range_test_runs_once_and_a_trial_that_found_a_suggestion_trains_with_it(monkeypatch):
    tested: list[object] = []
    find = lr_finder.find_lr

    def counted(trainer, *args, **kwargs):
        tested.append(trainer)
        return find(trainer, *args, **kwargs)

    monkeypatch.setattr(lr_finder, "find_lr", counted)
    measured = SharedMeasurements()
    fresh = prepared({"embed_dim": 16}, measured, lr_finder=True, precision="fp32")
    (tester,) = tested
    assert tester is not fresh.trainer  # the test's steps are not the trial's
    assert fresh.suggested_lr is not None and fresh.trainer.config.lr == fresh.suggested_lr

    retry = prepared({"embed_dim": 16}, measured, lr_finder=True, suggested_lr=0.0123, precision="fp32")
    assert len(tested) == 1 and retry.suggested_lr == retry.trainer.config.lr == 0.0123
    assert retry.trainer.optimizer.param_groups[0]["lr"] == 0.0123

    # Without --lr auto a stored suggestion changes nothing: the plan's LR trains.
    plain = prepared({"embed_dim": 16, "lr": 0.005}, measured, suggested_lr=0.0123, precision="fp32")
    assert len(tested) == 1 and plain.suggested_lr is None and plain.trainer.config.lr == 0.005


def test_plans_of_one_architecture_share_their_flops_counts():
    measured = SharedMeasurements()
    points = [{"embed_dim": 16, "lr": 1e-3}, {"embed_dim": 16, "lr": 2e-3}, {"embed_dim": 32, "lr": 1e-3}]
    first, same, wider = (prepared(point, measured, precision="fp32") for point in points)
    for run in (first, same, wider):
        assert run.trainer.flops_meter is run.meter
        run.trainer.run_step(next(iter(run.trainer.batches("train"))), training=True)  # one forward pass, metered
    assert (first.meter.traces, same.meter.traces, wider.meter.traces) == (1, 0, 1)
    assert len(measured.flops_counts) == 2
    assert same.costs()["flops.total"] == first.costs()["flops.total"] < wider.costs()["flops.total"]
