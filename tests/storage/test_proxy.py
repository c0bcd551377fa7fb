"""The storage proxy's server and client: a real ``hpsearch proxy`` process, clients in this process."""

import json
import threading
import time
from datetime import datetime

import grpc
import optuna
import pytest
import sqlalchemy as sa
from optuna.storages._grpc.auto_generated import api_pb2_grpc
from optuna.trial import TrialState

from hpsearch.storage.database import StudyDatabase
from hpsearch.storage.optuna_seam import (
    TRIAL_HEARTBEATS,
    enqueue_points,
    has_waiting_trial,
    params_in_one_request,
    taking_queued_trials_at_once,
    trial_id,
)
from hpsearch.storage.proxy import TAKE_PREFIX, ProxiedStorage, ProxyQueueLocks
from hpsearch.storage.retry import DatabaseRetry
from tests.search.test_proxy_cli import free_port, running_proxy


@pytest.fixture
def proxy_url(sqlite_url):
    """A proxy on a SQLite file that checks for stale trials every second, with a 2 s grace of its own."""
    port = free_port()
    with running_proxy(sqlite_url, port, "--heartbeat-interval", "1", "--grace-period", "2"):
        yield f"grpc://127.0.0.1:{port}"


def through(proxy_url: str, grace: int) -> StudyDatabase:
    return StudyDatabase.open_for_search(proxy_url, retry=DatabaseRetry(proxy_url, 10), heartbeat_interval=1, grace_period=grace)


def running_trial(database: StudyDatabase, study_name: str) -> int:
    """A new study through the proxy, with one trial taken (RUNNING, its first heartbeat stored by the take)."""
    study = optuna.create_study(study_name=study_name, storage=database.storage)
    study.enqueue_trial({})
    trial = study.ask()
    database.storage.record_heartbeat(trial_id(trial))  # declares this worker's grace
    return trial.number


def state_of(sqlite_url: str, study_name: str, number: int) -> TrialState:
    return optuna.load_study(study_name=study_name, storage=sqlite_url).trials[number].state


def test_the_proxy_fails_a_silent_trial_after_its_workers_grace_and_not_before(proxy_url, sqlite_url):
    patient, hasty = through(proxy_url, grace=30), through(proxy_url, grace=2)
    kept, failed = running_trial(patient, "patient"), running_trial(hasty, "hasty")
    time.sleep(6)  # neither beats again: past the hasty worker's grace and the proxy's own, inside the patient one's
    assert state_of(sqlite_url, "hasty", failed) == TrialState.FAIL
    assert state_of(sqlite_url, "patient", kept) == TrialState.RUNNING
    # The failed trial's retry is queued, as a worker on the database URL would queue it.
    assert [t.state for t in optuna.load_study(study_name="hasty", storage=sqlite_url).trials] == [TrialState.FAIL, TrialState.WAITING]
    patient.close()
    hasty.close()


def test_a_restarted_proxy_judges_a_taken_trial_by_its_workers_grace_at_once(sqlite_url):
    port = free_port()
    with running_proxy(sqlite_url, port, "--heartbeat-interval", "1", "--grace-period", "2"):
        patient = through(f"grpc://127.0.0.1:{port}", grace=30)
        study = taking_queued_trials_at_once(optuna.create_study(study_name="taken", storage=patient.storage))
        enqueue_points(study, [{}])
        number = study.ask().number  # the take declares the worker's grace; no heartbeat follows
    # Another proxy process on the same database, as after a restart or beside the first: it never saw
    # the take, and must not judge the trial by its own 2 s.
    with running_proxy(sqlite_url, port, "--heartbeat-interval", "1", "--grace-period", "2"):
        time.sleep(6)
        assert state_of(sqlite_url, "taken", number) == TrialState.RUNNING
    patient.close()


def test_an_epoch_row_and_its_report_through_the_proxy_commit_together_and_not_on_an_ended_trial(proxy_url, sqlite_url):
    database = through(proxy_url, grace=30)
    study = optuna.create_study(study_name="epochs", storage=database.storage)
    trial = study.ask()
    database.epoch_table.write(trial_id(trial), {"epoch": 1, "val_loss": 0.5}, report=(1, 0.5))
    study.tell(trial, 0.5)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):  # the worker's cue that its trial was taken from it
        database.epoch_table.write(trial_id(trial), {"epoch": 2, "val_loss": 0.4}, report=(2, 0.4))
    direct = StudyDatabase.open_for_search(sqlite_url)
    assert list(direct.epoch_table.frame("epochs")["epoch"]) == [1], "a refused report takes its row with it"
    assert optuna.load_study(study_name="epochs", storage=sqlite_url).trials[0].intermediate_values == {1: 0.5}
    direct.close()
    database.close()


def test_a_study_queue_lock_through_the_proxy_keeps_a_second_client_out_until_released(proxy_url):
    first, second = through(proxy_url, 30), through(proxy_url, 30)
    events: list[str] = []
    with first.queue_lock("locked"):
        waiter = threading.Thread(target=lambda: _take_and_note(second, events))
        waiter.start()
        time.sleep(1.5)
        events.append("first releases")
    waiter.join(timeout=30)
    assert events == ["first releases", "second holds"]
    first.close()
    second.close()


def _take_and_note(database: StudyDatabase, events: list[str]) -> None:
    with database.queue_lock("locked"):
        events.append("second holds")


def test_a_lock_whose_holder_died_is_released_when_its_lease_ends(sqlite_url):
    database = StudyDatabase.open_for_search(sqlite_url)
    lines: list[str] = []
    locks = ProxyQueueLocks(database, lines.append)
    locks.take("s", "dead-holder")
    locks.take("s", "dead-holder")  # a take repeated after a lost answer is the same hold
    locks.expire(lease=0)
    assert lines == ["study 's': released a queue lock held over 0 s (its worker is gone)"]
    taken = threading.Event()
    threading.Thread(target=lambda: (locks.take("s", "next"), taken.set()), daemon=True).start()
    assert taken.wait(10)
    locks.release("next")
    locks.release("next")  # a repeated release changes nothing
    database.close()


class LostAnswer(grpc.RpcError):
    """What a worker sees when the network drops the proxy's answer: the proxy is unreachable."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "the answer was lost on the way back"


class LoseFirstAnswer(grpc.UnaryUnaryClientInterceptor):
    """The first call of ``method`` reaches the proxy and is carried out; its answer is lost."""

    def __init__(self, method: str) -> None:
        self.method, self.lost = method, 0

    def intercept_unary_unary(self, continuation, client_call_details, request):
        answer = continuation(client_call_details, request)
        if client_call_details.method.endswith(f"/{self.method}") and not self.lost:
            answer.result()  # the proxy has done it
            self.lost += 1
            raise LostAnswer()
        return answer


def _one_call_a_trial(study: optuna.Study, points: list[dict]) -> None:
    for point in points:
        study.enqueue_trial(point)


@pytest.mark.parametrize(
    ("queue", "lost_call"),
    [(_one_call_a_trial, "CreateNewTrial"), (enqueue_points, "SetStudySystemAttribute")],  # Optuna's way; hpsearch's batch request
)
def test_trials_queued_through_the_proxy_whose_answer_is_lost_are_queued_once(proxy_url, sqlite_url, queue, lost_call):
    database = through(proxy_url, grace=30)
    storage = database.storage
    lose = LoseFirstAnswer(lost_call)
    storage._stub = api_pb2_grpc.StorageServiceStub(grpc.intercept_channel(storage._channel, lose))
    study = optuna.create_study(study_name="lost", storage=storage)
    queue(study, [{"x": 1.0}, {"x": 2.0}])  # the call whose answer is lost is retried
    assert lose.lost == 1 and storage.retry.retried_calls == 1
    queued = optuna.load_study(study_name="lost", storage=sqlite_url).get_trials(deepcopy=False)
    assert [(t.number, t.state, t.system_attrs["fixed_params"]) for t in queued] == [
        (0, TrialState.WAITING, {"x": 1.0}), (1, TrialState.WAITING, {"x": 2.0})
    ]
    database.close()


def test_a_take_through_the_proxy_whose_answer_is_lost_takes_one_trial_for_its_worker(proxy_url, sqlite_url):
    database = through(proxy_url, grace=30)
    storage = database.storage
    storage.worker_name = "host:7:cpu"
    lose = LoseFirstAnswer("GetStudyIdFromName")
    storage._stub = api_pb2_grpc.StorageServiceStub(grpc.intercept_channel(storage._channel, lose))
    study = taking_queued_trials_at_once(optuna.create_study(study_name="take", storage=storage))
    enqueue_points(study, [{"x": 1.0}, {"x": 2.0}])
    lose.lost = 0  # lose the take's answer, not the study's creation's
    trial = study.ask()
    assert lose.lost == 1 and trial.number == 0 and trial.suggest_float("x", 0, 4) == 1.0
    stored = optuna.load_study(study_name="take", storage=sqlite_url).get_trials(deepcopy=False)
    assert [t.state for t in stored] == [TrialState.RUNNING, TrialState.WAITING]  # the repeat took no second trial
    assert stored[0].user_attrs["worker"] == "host:7:cpu"
    assert study.ask().number == 1 and study.ask().number == 2  # then a fresh trial: the queue is empty
    database.close()


def test_a_repeated_take_gets_its_trial_from_another_proxy_process(sqlite_url):
    # The first process took the trial and died before it answered; the client's repeat reaches
    # another process (a restarted proxy, or one of --processes), which never saw the take.
    direct = StudyDatabase.open_for_search(sqlite_url)
    study = optuna.create_study(study_name="repeat", storage=direct.storage)
    enqueue_points(study, [{}, {}])
    first, restarted = (StudyDatabase.open_for_search(sqlite_url, storage_class=ProxiedStorage).storage for _ in range(2))
    request = {"study_id": study._study_id, "worker": "host:7:cpu", "grace": 30, "take_id": "t1"}
    taken = first.get_study_id_from_name(TAKE_PREFIX + json.dumps(request))
    assert restarted.get_study_id_from_name(TAKE_PREFIX + json.dumps({**request, "repeat": True})) == taken
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING, TrialState.WAITING]
    # A repeat whose first attempt took nothing takes a trial.
    assert restarted.get_study_id_from_name(TAKE_PREFIX + json.dumps({**request, "take_id": "t2", "repeat": True})) != taken
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING, TrialState.RUNNING]
    direct.close()


class CountCalls(grpc.UnaryUnaryClientInterceptor):
    """Counts the client's calls by method name."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def intercept_unary_unary(self, continuation, client_call_details, request):
        method = client_call_details.method.rsplit("/", 1)[-1]
        self.calls[method] = self.calls.get(method, 0) + 1
        return continuation(client_call_details, request)


def count_calls(storage) -> CountCalls:
    """Count every call of a proxy client: its own, and its cache's reads of whole studies (a stub of their own)."""
    count = CountCalls()
    storage._stub = api_pb2_grpc.StorageServiceStub(grpc.intercept_channel(storage._channel, count))
    storage._cache.grpc_client = storage._stub
    return count


def test_a_trials_parameters_through_the_proxy_are_one_request_sent_only_if_the_block_ends_well(proxy_url, sqlite_url):
    database = through(proxy_url, grace=30)
    storage = database.storage
    count = count_calls(storage)
    study = optuna.create_study(study_name="params", storage=storage)
    trial = study.ask()
    with params_in_one_request(trial):
        point = {"x": trial.suggest_float("x", 0, 1), "n": trial.suggest_int("n", 1, 8), "c": trial.suggest_categorical("c", ["a", "b"])}
        assert trial.params == point  # the trial's own copy is set at each call, as always
    assert count.calls.get("SetTrialParameter", 0) == 0 and count.calls["SetTrialSystemAttribute"] == 1
    stored = optuna.load_study(study_name="params", storage=sqlite_url).trials[0]
    assert stored.params == point and stored.distributions == trial.distributions

    broken = study.ask()
    with pytest.raises(RuntimeError), params_in_one_request(broken):
        broken.suggest_float("x", 0, 1)
        raise RuntimeError("the model cannot be built")
    assert optuna.load_study(study_name="params", storage=sqlite_url).trials[1].params == {}

    clash = study.ask()  # a distribution the study's trials cannot share: refused as Optuna's client refuses it
    with pytest.raises(ValueError, match="Cannot set different distribution kind"), params_in_one_request(clash):
        clash.suggest_categorical("x", ["a"])
    study.tell(clash, state=TrialState.FAIL)
    ended = study.ask()
    study.tell(ended, state=TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError), params_in_one_request(ended):
        ended.suggest_float("x", 0, 1)
    database.close()


def _ends_three_ways(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0, 1)
    trial.set_user_attr("seen", x)
    trial.report(x, 1)
    if trial.number == 1:
        raise optuna.TrialPruned()
    if trial.number == 2:
        raise ValueError("diverged")
    return x


@pytest.mark.parametrize(("sampler", "reads"), [
    (optuna.samplers.RandomSampler(seed=0), 2 + 2 + 2),  # the read for the callbacks is the tell's, ended as told
    # TPE's after_trial stores the constraints of a complete or pruned trial between the tell's
    # read and the end: those two are read again.
    (optuna.samplers.TPESampler(seed=0, constraints_func=lambda t: [t.params["x"] - 0.5]), 3 + 3 + 2),
])
def test_optimize_through_the_proxy_gives_its_callbacks_each_trial_as_stored(proxy_url, sqlite_url, sampler, reads):
    database = through(proxy_url, grace=30)
    storage = database.storage
    count = count_calls(storage)
    study = optuna.create_study(study_name="told", storage=storage, sampler=sampler)
    seen: list[optuna.trial.FrozenTrial] = []
    study.optimize(_ends_three_ways, n_trials=3, catch=(ValueError,), callbacks=[lambda _, trial: seen.append(trial)])
    assert count.calls["GetTrial"] == reads

    def described(trial: optuna.trial.FrozenTrial) -> tuple:
        return (trial.number, trial.state, trial.values, trial.params, trial.user_attrs, trial.system_attrs,
                trial.intermediate_values, trial.datetime_start, trial.datetime_complete is not None)

    stored = optuna.load_study(study_name="told", storage=sqlite_url).trials
    assert [t.state for t in stored] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert [described(t) for t in seen] == [described(t) for t in stored]
    database.close()


def heartbeat_of(sqlite_url: str, stored_id: int) -> datetime:
    with sa.create_engine(sqlite_url).connect() as connection:
        beats = TRIAL_HEARTBEATS
        return connection.execute(sa.select(beats.c.heartbeat).where(beats.c.trial_id == stored_id)).scalar_one()


def test_closing_attributes_through_the_proxy_store_the_heartbeat_in_the_same_request(proxy_url, sqlite_url):
    database = through(proxy_url, grace=30)
    storage = database.storage
    number = running_trial(database, "closing")
    stored_id = trial_id(optuna.load_study(study_name="closing", storage=sqlite_url).trials[number])
    first_beat = heartbeat_of(sqlite_url, stored_id)
    count = count_calls(storage)
    time.sleep(1.1)  # SQLite stores the heartbeat to the second
    storage.set_trial_user_attrs(stored_id, {"a": 1, "b": [2]}, beat=True)
    assert count.calls == {"SetTrialSystemAttribute": 1}
    assert heartbeat_of(sqlite_url, stored_id) > first_beat
    assert optuna.load_study(study_name="closing", storage=sqlite_url).trials[number].user_attrs["b"] == [2]
    database.close()


def test_the_heartbeat_thread_through_the_proxy_does_not_beat_again_right_after_the_take(proxy_url):
    database = through(proxy_url, grace=30)
    storage = database.storage
    study = taking_queued_trials_at_once(optuna.create_study(study_name="beats", storage=storage))
    enqueue_points(study, [{}])
    taken = study.ask()  # the take stores the first heartbeat, and this worker's grace with it
    count = count_calls(storage)
    storage.record_heartbeat(trial_id(taken))  # what Optuna's thread does as it starts
    assert count.calls == {}
    time.sleep(0.6)  # past half the 1 s interval
    storage.record_heartbeat(trial_id(taken))
    assert count.calls == {"SetTrialSystemAttribute": 1}
    database.close()


def test_whether_a_trial_waits_is_one_request_through_the_proxy(proxy_url):
    database = through(proxy_url, grace=30)
    storage = database.storage
    study = taking_queued_trials_at_once(optuna.create_study(study_name="waits", storage=storage))
    count = count_calls(storage)
    assert has_waiting_trial(study) is False
    enqueue_points(study, [{}])
    assert has_waiting_trial(study) is True
    study.ask()
    assert has_waiting_trial(study) is False
    assert count.calls["GetStudyIdFromName"] == 4 and "GetTrials" not in count.calls  # three questions and the take
    database.close()


def test_the_proxys_reads_of_a_study_match_the_database_as_its_trials_change(sqlite_url):
    direct = StudyDatabase.open_for_search(sqlite_url)
    proxied = StudyDatabase.open_for_search(sqlite_url, storage_class=ProxiedStorage).storage
    study = optuna.create_study(study_name="settling", storage=direct.storage)
    enqueue_points(study, [{}] * 4)
    first, second, third = (study.ask() for _ in range(3))
    study_id = study._study_id

    def agree() -> list[TrialState]:
        ours = proxied.get_all_trials(study_id, deepcopy=False)
        theirs = optuna.load_study(study_name="settling", storage=sqlite_url).get_trials(deepcopy=False)
        assert [(t.number, t.state, t.values, t.user_attrs) for t in ours] == [
            (t.number, t.state, t.values, t.user_attrs) for t in theirs
        ]
        return [t.state for t in ours]

    assert agree() == [TrialState.RUNNING] * 3 + [TrialState.WAITING]
    study.tell(first, 0.5)
    first_read = proxied.get_all_trials(study_id, deepcopy=False)[0]
    study.tell(second, state=TrialState.FAIL)
    assert agree() == [TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    # A failed trial may still be written to (a stale one gets its fail_reason after it is told FAIL).
    direct.storage._set_trial_user_attrs(trial_id(second), {"fail_reason": "killed"}, True)
    third.set_user_attr("epochs", 3)
    study.tell(third, state=TrialState.PRUNED)
    assert agree() == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED, TrialState.WAITING]
    # A settled trial is read from the database once, then kept.
    assert proxied.get_all_trials(study_id, deepcopy=False)[0] is first_read
    assert [t.number for t in proxied.get_all_trials(study_id, states=(TrialState.WAITING,))] == [3]
    direct.close()
