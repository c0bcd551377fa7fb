"""A worker's wait for other workers' trials when its queue is empty, on a real SQLite file or in memory (nothing is trained)."""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from hpsearch.search.queue_wait import wait_for_queue
from hpsearch.storage.attributes import FAIL_REASON_ATTR, RETRY_OF_ATTR

from .stale_trials import QUICK, start_trial, two_point_orchestrator


def test_waiting_for_the_queue_lasts_while_a_trial_runs_and_ends_with_its_retry(tmp_path):
    orchestrator = two_point_orchestrator(tmp_path, "wait")
    study, _ = orchestrator.create(None)
    assert wait_for_queue(study, None, None) is True  # trials wait: nothing to wait for
    done, running = start_trial(study), start_trial(study)
    study.tell(done, 0.5)
    polls = []
    began = time.monotonic()
    assert wait_for_queue(study, None, lambda: polls.append(time.monotonic())) is True
    waited = time.monotonic() - began
    assert QUICK.grace_period <= waited < QUICK.grace_period + 4  # until the silent trial went stale
    assert len(polls) >= 2  # it kept looking, about once a second
    (retry,) = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert retry.system_attrs["failed_trial"] == running.number
    # Nothing waits or runs once the retry has finished: the wait ends at once.
    study.tell(start_trial(study), 0.4)
    began = time.monotonic()
    assert wait_for_queue(study, None, None) is False
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
    assert wait_for_queue(study, time.monotonic() + 1.5, None) is False
    assert 1.4 <= time.monotonic() - began < 2.5
    orchestrator.database.close()


def wait_beside(peer: Callable[[optuna.Study, optuna.Trial], None]) -> tuple[bool, optuna.Study, float]:
    """``wait_for_queue``'s answer, the study and the seconds it waited, while ``peer`` ends the study's running trial."""
    import threading

    import hpsearch.search.handover  # noqa: F401  (wait_for_queue imports it; torch's import, run alone, outlasts the peer)

    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    trial = study.ask()
    thread = threading.Thread(target=peer, args=(study, trial))
    thread.start()
    began = time.monotonic()
    try:
        found = wait_for_queue(study, deadline=time.monotonic() + 30, on_poll=None)
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
    from hpsearch.search import queue_wait as module

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
