"""The orchestrator's grid queue and its wait for other workers' trials, on a real SQLite file (nothing is trained)."""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.search.orchestrator import Heartbeat, Orchestrator
from hpsearch.search.queue import StudyQueue
from hpsearch.search.resolved import resolve
from hpsearch.search.spec import StudySpec
from hpsearch.storage.attributes import FAIL_REASON_ATTR, RETRY_OF_ATTR

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


# A dead worker's trial: RUNNING, with a heartbeat older than the grace period. Real SQLite, no training.
QUICK = Heartbeat(interval=1, grace_period=2)


def two_point_orchestrator(tmp_path, name: str) -> Orchestrator:
    spec = StudySpec(models=("tfn_classifier",), sweep=("embed_dim:16,32",), task_options={"dataset_size": 100},
                     study_name=name, output_dir=str(tmp_path))
    return Orchestrator(resolve(spec), echo=lambda line: None, progress=False, heartbeat=QUICK)


def start_trial(study: optuna.Study) -> optuna.Trial:
    """Take a queued trial as a worker does, with one heartbeat, and leave it RUNNING (its worker "dies")."""
    trial = study.ask()
    for name, value in study._storage.get_trial(trial._trial_id).system_attrs["fixed_params"].items():
        # The fixed grid point becomes the trial's params, as in a real trial (the model, embed_dim).
        trial.suggest_categorical(name, [value]) if isinstance(value, str) else trial.suggest_int(name, 1, 1024)
    study._storage.record_heartbeat(trial._trial_id)
    return trial


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


def test_waiting_for_the_queue_lasts_while_a_trial_runs_and_ends_with_its_retry(tmp_path):
    orchestrator = two_point_orchestrator(tmp_path, "wait")
    study, _ = orchestrator.create(None)
    assert orchestrator._wait_for_queue(study, None, None) is True  # trials wait: nothing to wait for
    done, running = start_trial(study), start_trial(study)
    study.tell(done, 0.5)
    polls = []
    began = time.monotonic()
    assert orchestrator._wait_for_queue(study, None, lambda: polls.append(time.monotonic())) is True
    waited = time.monotonic() - began
    assert QUICK.grace_period <= waited < QUICK.grace_period + 4  # until the silent trial went stale
    assert len(polls) >= 2  # it kept looking, about once a second
    (retry,) = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert retry.system_attrs["failed_trial"] == running.number
    # Nothing waits or runs once the retry has finished: the wait ends at once.
    study.tell(start_trial(study), 0.4)
    began = time.monotonic()
    assert orchestrator._wait_for_queue(study, None, None) is False
    assert time.monotonic() - began < 1
    orchestrator.database.close()


def test_waiting_stops_at_the_deadline(tmp_path):
    orchestrator = two_point_orchestrator(tmp_path, "deadline")
    study, _ = orchestrator.create(None)
    for _ in range(2):
        trial = start_trial(study)
    # A live worker's trial: its heartbeat keeps coming, so only the deadline ends the wait.
    study._storage.record_heartbeat(trial._trial_id)
    began = time.monotonic()
    assert orchestrator._wait_for_queue(study, time.monotonic() + 1.5, None) is False
    assert 1.4 <= time.monotonic() - began < 2.5
    orchestrator.database.close()


def wait_beside(peer: Callable[[optuna.Study, optuna.Trial], None]) -> tuple[bool, optuna.Study, float]:
    """``_wait_for_queue``'s answer, the study and the seconds it waited, while ``peer`` ends the study's running trial."""
    import threading

    import hpsearch.search.handover  # noqa: F401  (_wait_for_queue imports it; torch's import, run alone, outlasts the peer)

    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    trial = study.ask()
    thread = threading.Thread(target=peer, args=(study, trial))
    thread.start()
    began = time.monotonic()
    try:
        found = Orchestrator._wait_for_queue(study, deadline=time.monotonic() + 30, on_poll=None)
    finally:
        thread.join()
    return found, study, time.monotonic() - began


def test_a_waiting_worker_takes_a_retry_queued_just_after_its_trial_failed():
    # A stale trial is told FAIL, and its retry queued a moment later (by a peer or the gRPC
    # proxy): a worker polling in between must not take the empty queue for the end.
    def fail_then_retry(study: optuna.Study, trial: optuna.Trial) -> None:
        time.sleep(1.5)
        study.tell(trial, state=TrialState.FAIL)
        time.sleep(1.5)  # more than a poll
        study.enqueue_trial({"x": 1.0}, user_attrs={RETRY_OF_ATTR: [trial.number]})

    found, study, _ = wait_beside(fail_then_retry)
    assert found and [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]


def test_a_handover_slower_than_the_settle_polls_is_waited_for_until_the_trial_has_its_reason(monkeypatch):
    """A loaded gRPC proxy queued the retry after the waiting worker's 5 polls: the worker exited 0, the retry left WAITING."""
    from hpsearch.search import orchestrator as module

    monkeypatch.setattr(module, "POLL_SECONDS", 0.05)  # the 5 settle polls last a quarter of a second

    def fail_then_retry(study: optuna.Study, trial: optuna.Trial) -> None:
        time.sleep(0.3)
        study.tell(trial, state=TrialState.FAIL)
        time.sleep(1.0)  # twenty polls: the callback's reads and writes on a busy machine
        study.enqueue_trial({"x": 1.0}, user_attrs={RETRY_OF_ATTR: [trial.number]})
        study._storage.set_trial_user_attr(trial._trial_id, FAIL_REASON_ATTR, "no heartbeat for over 3 s")

    found, study, _ = wait_beside(fail_then_retry)
    assert found and [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]

    # A failed trial that has its reason and no retry (out of retries): the wait ends after the settle polls.
    def fail_for_good(study: optuna.Study, trial: optuna.Trial) -> None:
        time.sleep(0.3)
        study._storage.set_trial_user_attr(trial._trial_id, FAIL_REASON_ATTR, "RuntimeError: out of retries")
        study.tell(trial, state=TrialState.FAIL)

    found, _, waited = wait_beside(fail_for_good)
    assert not found and waited < 0.3 + 0.05 * (module.RETRY_SETTLE_POLLS + 4)


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
