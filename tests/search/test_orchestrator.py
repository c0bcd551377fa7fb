"""The orchestrator's grid and budget queue, on a real SQLite file (nothing is trained)."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.search.orchestrator import Orchestrator
from hpsearch.search.queue import StudyQueue
from hpsearch.search.resolved import resolve
from hpsearch.search.spec import StudySpec

from .stale_trials import QUICK, start_trial, two_point_orchestrator

SWEEP = ("embed_dim:16,32", "lr:1e-3,3e-3,1e-2,3e-2", "kernel_type:rbf,compact")


@pytest.fixture(autouse=True)
def whole_grid_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 16-point grid is queued in one batch, so that a test sees its whole order."""
    monkeypatch.setattr(StudyQueue, "BATCH", 16)


def queued_points(tmp_path, name: str, seed: int) -> tuple[list[dict], list[dict]]:
    spec = StudySpec(
        models=("tfn_classifier",),
        sweep=SWEEP,
        task_options={"dataset_size": 100},
        train={"seed": seed},
        study_name=name,
        output_dir=str(tmp_path),
    )
    resolved = resolve(spec)
    orchestrator = Orchestrator(resolved, echo=lambda line: None, progress=False)
    study, planned = orchestrator.create(None)
    assert planned == 16
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda t: t.number)
    orchestrator.database.close()
    return [t.system_attrs["fixed_params"] for t in trials], resolved.sweep.grid_points()


def test_grid_points_queue_once_each_in_an_order_seeded_by_seed(tmp_path):
    first, written = queued_points(tmp_path, "seed0", seed=0)
    again, _ = queued_points(tmp_path / "again", "seed0", seed=0)
    other, _ = queued_points(tmp_path, "seed1", seed=1)

    key = lambda point: sorted(point.items())
    assert sorted(first, key=key) == sorted(written, key=key)  # every point, once
    assert first == again  # the same seed, the same order
    assert first != written and other != first
    # The written order would start with 4 points of the smallest model and LR; a pruner's
    # first trials should not all come from one corner of the grid.
    assert {p["lr"] for p in first[:4]} != {1e-3}


def test_resuming_a_grid_queues_only_the_points_not_yet_run(tmp_path):
    _, written = queued_points(tmp_path, "resume", seed=0)
    storage = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    study = optuna.load_study(study_name="resume", storage=storage)
    waiting = sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda t: t.number)
    assert len(waiting) == len(written)
    again, _ = queued_points(tmp_path, "resume", seed=0)
    assert len(again) == len(written)  # the same points, not queued twice


def test_create_on_a_study_with_a_stale_running_trial_queues_its_retry_instead_of_nothing(tmp_path):
    orchestrator = two_point_orchestrator(tmp_path, "stale")
    study, planned = orchestrator.create(None)
    assert planned == 2
    first, second = start_trial(study), start_trial(study)
    study.tell(first, 0.5)
    time.sleep(QUICK.grace_period + 1.5)  # the second trial's worker is gone; its heartbeat ages

    again = two_point_orchestrator(tmp_path, "stale")
    study, planned = again.create(None)
    assert planned == 1  # the dead trial's retry, not "nothing to do", and no point queued twice
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states[first.number] == TrialState.COMPLETE and states[second.number] == TrialState.FAIL
    (retry,) = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert retry.system_attrs["failed_trial"] == second.number  # Optuna's heartbeat retry, which resumes
    assert retry.params == second.params
    again.database.close()
    orchestrator.database.close()


def test_a_budgets_top_up_while_a_trial_waits_reads_no_trials(tmp_path, monkeypatch):
    # Workers that found the queue empty together each top it up in turn: after the first, a trial
    # waits, and the others ask for no more than that (one statement), not the whole study.
    spec = StudySpec(models=("tfn_classifier",), sweep=("lr:1e-3..1e-2:log",), sampler="random", n_trials=20,
                     task_options={"dataset_size": 100}, study_name="budget", output_dir=str(tmp_path))
    orchestrator = Orchestrator(resolve(spec), echo=lambda line: None, progress=False, heartbeat=QUICK)
    study, _ = orchestrator.create(None)
    assert orchestrator.top_up(study) is True  # the first batch
    assert study.get_trials(deepcopy=False, states=(TrialState.WAITING,))

    def read_the_study(*args, **kwargs):
        raise AssertionError("the top-up read the study while a trial waited")

    monkeypatch.setattr(StudyQueue, "queue_budget", read_the_study)
    assert orchestrator.top_up(study) is True
    for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        study.tell(study.ask(), 0.5)
    with pytest.raises(AssertionError, match="read the study"):  # with none waiting, the top-up is the full one
        orchestrator.top_up(study)
    orchestrator.database.close()


def test_a_top_up_that_waited_for_the_lock_queues_the_next_batch_when_the_holder_queued_none(tmp_path, monkeypatch):
    # With many workers every take of the queue lock waits for another holder (who may have
    # queued nothing): a wait must not stand in for a top-up, or no worker ever queues again.
    import threading

    from hpsearch.storage.database import StudyDatabase

    monkeypatch.setattr(StudyQueue, "BATCH", 4)
    spec = StudySpec(models=("tfn_classifier",), sweep=SWEEP, task_options={"dataset_size": 100},
                     study_name="livelock", output_dir=str(tmp_path))
    orchestrator = Orchestrator(resolve(spec), echo=lambda line: None, progress=False, heartbeat=QUICK)
    study, _ = orchestrator.create(None)
    for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):  # the first batch, all run
        study.tell(study.ask(), 0.5)
    assert not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))

    peer = StudyDatabase.open_for_search(f"sqlite:///{tmp_path / 'hpsearch.db'}")
    answer: list[bool] = []
    topping_up = threading.Thread(target=lambda: answer.append(orchestrator.top_up(study)))
    try:
        with peer.queue_lock("livelock"):  # held, and let go with nothing queued
            topping_up.start()
            topping_up.join(0.5)
            assert topping_up.is_alive(), "the top-up must wait for the lock"
        topping_up.join(30)
    finally:
        peer.close()
    assert answer == [True]
    assert len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) == 4  # the next batch
    orchestrator.database.close()


@pytest.mark.parametrize(("train", "sweep", "noted"), [
    ({"scheduler": "step", "epochs": 8}, (), "in the last of 8 epochs it is 1e-06 of --lr"),  # the defaults: 0.1 every epoch
    ({"epochs": 8}, ("scheduler:cosine,step",), "in the last of 8 epochs it is 1e-06 of --lr"),
    ({"scheduler": "step", "epochs": 8, "step_every_epochs": 3.0}, (), None),  # 0.01 at the end: a decay, not a stop
    ({"scheduler": "step", "epochs": 3}, (), None),
    ({"scheduler": "cosine", "epochs": 8}, (), None),
])
def test_a_step_schedule_that_all_but_stops_training_is_noted_when_the_study_is_created(tmp_path, train, sweep, noted):
    spec = StudySpec(models=("tfn_classifier",), sweep=("embed_dim:16", *sweep), task_options={"dataset_size": 100},
                     train=train, output_dir=str(tmp_path))
    warned: list[str] = []
    orchestrator = Orchestrator(resolve(spec), echo=lambda line: None, progress=False, warn=warned.append)
    orchestrator.create(None)
    orchestrator.database.close()
    if noted is None:
        assert warned == []
    else:
        assert len(warned) == 1 and noted in warned[0] and "--step-every-epochs 3" in warned[0], warned


def test_a_new_study_records_every_trainer_setting_its_trials_run_with_but_the_swept_ones(tmp_path):
    # SGD's momentum, a default, was recorded nowhere: not in the spec (which keeps what was given) nor a trial.
    spec = StudySpec(models=("tfn_classifier",), sweep=("embed_dim:16", "optimizer:sgd,adamw"),
                     task_options={"dataset_size": 100}, train={"epochs": 2, "lr": 0.01}, output_dir=str(tmp_path))
    orchestrator = Orchestrator(resolve(spec), echo=lambda line: None, progress=False)
    study, _ = orchestrator.create(None)
    orchestrator.database.close()
    train = study.user_attrs["hpsearch.train"]
    assert train["momentum"] == 0.9 and train["lr"] == 0.01 and train["epochs"] == 2 and train["scheduler"] == "cosine"
    assert "optimizer" not in train and "checkpoint_dir" not in train  # swept: each trial's parameter


def test_a_converged_study_with_nothing_queued_says_it_converged_not_that_its_budget_is_spent(tmp_path):
    # A new user's re-run read "its budget of 32 trials ... is spent, with 16 trials; ... a larger budget adds trials".
    spec = StudySpec(models=("tfn_classifier",), sweep=("lr:1e-3..1e-2:log",), sampler="random", n_trials=32,
                     stop_when_converged=3, task_options={"dataset_size": 100}, study_name="conv", output_dir=str(tmp_path))
    said: list[str] = []
    orchestrator = Orchestrator(resolve(spec), echo=said.append, progress=False)
    study, _ = orchestrator.create(spec.n_trials)
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):  # the queued batch runs, none improving
        trial = study.ask()
        trial.suggest_float("lr", 1e-3, 1e-2, log=True)
        study.tell(trial, 0.5)
    outcome = orchestrator.run()
    assert outcome.idle and outcome.converged and outcome.trials_run == 0
    assert said == ["Study 'conv' has converged: its last 3 complete trials did not improve the best "
                    "(--stop-when-converged 3); nothing to do (without it, or with a larger N, the search goes on)."]
    orchestrator.database.close()


def test_a_grid_smaller_than_its_n_trials_says_each_point_runs_once(tmp_path):
    # A new user's study file kept n_trials = 6 when a flag made the sweep a 2-point grid: 2 trials ran, unexplained.
    spec = StudySpec(models=("tfn_classifier",), sweep=("embed_dim:16,32",), n_trials=6, task_options={"dataset_size": 100},
                     study_name="small", output_dir=str(tmp_path))
    said: list[str] = []
    orchestrator = Orchestrator(resolve(spec), echo=lambda line: None, warn=said.append, progress=False)
    _, planned = orchestrator.create(spec.n_trials)
    assert planned == 2 and said == ["--n-trials 6 is more than the grid's 2 points: each point runs once"]
    orchestrator.database.close()
