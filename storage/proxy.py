"""The storage proxy's server: Optuna's gRPC proxy in front of a study database, carrying what hpsearch adds.

Optuna's proxy (``optuna.storages.run_grpc_proxy_server``) serves Optuna's storage API, and
only that: many workers share its few database connections. An hpsearch worker also writes the
per-epoch table, sends heartbeats, batches a trial's user attributes, takes the study's queue
lock, queues a batch of trials in one transaction and takes the first queued trial in one
request, none of which that API has. They travel through it as attributes under reserved keys
(``TUNNEL_KEYS``), and the take as a study name (``TAKE_PREFIX``), which the proxy's storage acts
on instead of storing or looking up; an Optuna client that is not hpsearch never sends them.
(Optuna's servicer hands such a call to the storage as it comes, study id 0 included;
``tests/storage/test_proxy.py`` holds that.) The proxy also does what a worker's stale-trial check
does, since its clients cannot read heartbeats: every heartbeat interval it fails each study's
trials whose heartbeat is older than the grace period and queues their retries.
"""

from __future__ import annotations

import copy
import json
import sys
import threading
import time
from collections.abc import Callable, Container
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import json_to_distribution
from optuna.trial import FrozenTrial, TrialState

from hpsearch.storage.optuna_seam import QueuedRDBStorage, trial_id

if TYPE_CHECKING:
    from hpsearch.storage.database import StudyDatabase

# Trial system attributes that are requests to the proxy, not attributes.
# Value: {"grace": the worker's --grace-period}. The proxy stores the heartbeat at its database's time.
HEARTBEAT_KEY = "hpsearch:proxy:heartbeat"
# Value: {"row": one row of hpsearch_epoch_metrics (epoch_metrics.to_db_row), "report": [step, value] or None},
# written in one transaction, as a worker on the database URL writes them.
EPOCH_KEY = "hpsearch:proxy:epoch"
# Value: {"attrs": {key: value}, "beat": {"grace": ...} or None}: set in one transaction, with the
# heartbeat when "beat" is given (a worker's closing attributes say that it still owns the trial).
USER_ATTRS_KEY = "hpsearch:proxy:user_attrs"
PARAMS_KEY = "hpsearch:proxy:params"  # value: [[name, internal value, distribution JSON], ...], set in one transaction
# Study system attributes that are requests. {"study": name, "token": holder, "take": bool}:
QUEUE_LOCK_KEY = "hpsearch:proxy:queue_lock"
# {"points": [fixed params, ...], "write_id": id}: a batch of WAITING trials in one transaction,
# where Optuna's API would queue them one call (and one transaction) each, under the queue lock.
WAITING_TRIALS_KEY = "hpsearch:proxy:waiting_trials"
TUNNEL_KEYS = frozenset({HEARTBEAT_KEY, EPOCH_KEY, USER_ATTRS_KEY, PARAMS_KEY, QUEUE_LOCK_KEY, WAITING_TRIALS_KEY})
# A study name that is a request: TAKE_PREFIX + JSON {"study_id", "worker", "grace", "take_id", "repeat"}.
# The take of a study's first WAITING trial (``QueuedRDBStorage.take_waiting_trial``) needs its
# answer, and GetStudyIdFromName is the one call of Optuna's proxy that answers with a number: the
# trial's id, or NOTHING_WAITING. A repeat (the client lost the answer) first looks for the trial
# its take id took.
TAKE_PREFIX = "hpsearch:proxy:take "
NOTHING_WAITING = -1
# A study name that is a question: WAITING_PREFIX + JSON {"study_id"}; the answer is 1 when a trial
# of the study waits in the queue, else 0 (QueuedRDBStorage.has_waiting_trial).
WAITING_PREFIX = "hpsearch:proxy:waiting "

# A queue lock whose holder has not released it after this long is released by the proxy: its
# holder died (a top-up of the queue takes well under a second).
QUEUE_LOCK_LEASE_S = 120.0
SWITCH_INTERVAL_S = 0.0005  # the GIL's, in the proxy process: see serve()

# Trials that never change again. A FAIL trial is not among them: a stale one is told FAIL first
# and gets its fail_reason after (QueuedRDBStorage's stale-trial callback).
SETTLED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class _StudyTrials:
    lock: threading.Lock = field(default_factory=threading.Lock)
    settled: dict[int, FrozenTrial] = field(default_factory=dict)  # by trial id
    unsettled_ids: set[int] = field(default_factory=set)  # trials read before that may change yet
    last_settled_id: int = -1


class ProxiedStorage(QueuedRDBStorage):
    """The proxy's storage: ``QueuedRDBStorage`` that acts on the requests hpsearch's workers tunnel to it.

    ``attach`` gives it the study database it serves (for the epoch table and the queue locks).

    ``get_all_trials`` keeps each study's settled trials. Optuna's servicer answers every client's
    ``GetTrials`` (a worker's ask, through its client's cache) with the whole study read from the
    database and then filtered, which at a few hundred trials took a third of the proxy's time
    (Optuna's docs put ``get_storage``'s cache in front of an ``RDBStorage`` for this). Here a
    read asks the database only for the trials that are new or may still change, as that cache does.
    """

    declares_grace = False  # each client's take sends its worker's own

    database: StudyDatabase | None = None
    queue_locks: ProxyQueueLocks | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trials_by_study: dict[int, _StudyTrials] = {}
        self._studies_guard = threading.Lock()
        # The running trials whose worker's declared grace period (its --grace-period, sent with
        # its take and heartbeats) this process has stored as their GRACE_ATTR: a trial is judged
        # by its own worker's patience, never by a shorter one of the proxy's. It is stored in the
        # database so that every proxy process judges alike, and a restarted one at once.
        self.graced: set[int] = set()

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        with self._studies_guard:
            known = self._trials_by_study.setdefault(study_id, _StudyTrials())
        with known.lock:
            fresh = self.new_and_unsettled_trials(study_id, set(known.unsettled_ids), known.last_settled_id)
            for trial in fresh:
                key = trial_id(trial)
                if trial.state in SETTLED:
                    known.settled[key] = trial
                    known.unsettled_ids.discard(key)
                    known.last_settled_id = max(known.last_settled_id, key)
                else:
                    known.unsettled_ids.add(key)
            trials = [*known.settled.values(), *(t for t in fresh if t.state not in SETTLED)]
        chosen = sorted((t for t in trials if states is None or t.state in states), key=lambda t: t.number)
        return copy.deepcopy(chosen) if deepcopy else chosen

    def get_study_id_from_name(self, study_name: str) -> int:
        if study_name.startswith(WAITING_PREFIX):
            return int(self.has_waiting_trial(json.loads(study_name[len(WAITING_PREFIX):])["study_id"]))
        if not study_name.startswith(TAKE_PREFIX):
            return super().get_study_id_from_name(study_name)
        request = json.loads(study_name[len(TAKE_PREFIX):])
        if request.get("repeat"):
            earlier = self.taken_by(request["study_id"], request["take_id"])
            if earlier is not None:
                return earlier  # the first attempt took it; only its answer was lost
        grace = int(request["grace"]) if request.get("grace") else None
        taken = self.take_waiting_trial(request["study_id"], request["worker"], grace, request["take_id"])
        if taken is None:
            return NOTHING_WAITING
        if grace is not None:
            self.graced.add(taken)
        return taken

    def attach(self, database: StudyDatabase, echo: Callable[[str], None]) -> None:
        self.database = database
        self.queue_locks = ProxyQueueLocks(database, echo)
        self.own_grace: int = self.grace_period or 2 * (self.heartbeat_interval or 10)  # Optuna's default grace

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == HEARTBEAT_KEY:
            self.record_heartbeat(trial_id)
            self._learn_grace(trial_id, value)
        elif key == EPOCH_KEY:
            assert self.database is not None, "attach() the database first"
            report = value["report"]
            self.database.epoch_table.write_stored(value["row"], (int(report[0]), float(report[1])) if report else None)
        elif key == USER_ATTRS_KEY:
            self.set_trial_user_attrs(trial_id, value["attrs"], beat=value["beat"] is not None)
            self._learn_grace(trial_id, value["beat"])
        elif key == PARAMS_KEY:
            self.set_trial_params(trial_id, [(name, internal, json_to_distribution(d)) for name, internal, d in value])
        else:
            super().set_trial_system_attr(trial_id, key, value)

    def _learn_grace(self, trial_id: int, beat: Any) -> None:
        # A trial that a worker's own ask created, not a take, is first told its grace with a heartbeat.
        if isinstance(beat, dict) and beat.get("grace") and trial_id not in self.graced:
            self.store_grace(trial_id, int(beat["grace"]))  # whole seconds, as --grace-period is
            self.graced.add(trial_id)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        if key == WAITING_TRIALS_KEY:
            self.create_waiting_trials(study_id, value["points"], value["write_id"])
            return
        if key != QUEUE_LOCK_KEY:
            super().set_study_system_attr(study_id, key, value)
            return
        # The study may not exist yet (create takes the lock first): its name is in the request.
        assert self.queue_locks is not None, "attach() the database first"
        if value["take"]:
            self.queue_locks.take(value["study"], value["token"])
        else:
            self.queue_locks.release(value["token"])


class ProxyQueueLocks:
    """The study queue locks the proxy holds for its clients, each until released or its lease ends.

    A client's take waits on a lock of this process first, so that of many clients waiting for one
    study's lock only one holds a database connection (the database's lock, which also keeps out
    workers and ``create`` commands that reach the database directly). A take or release repeated
    after a lost answer is applied once (the token names the holder).
    """

    def __init__(self, database: StudyDatabase, echo: Callable[[str], None]) -> None:
        self.database, self.echo = database, echo
        self._guard = threading.Lock()
        self._studies: dict[str, threading.Lock] = {}
        self._held: dict[str, tuple[str, AbstractContextManager[None], float]] = {}

    def take(self, study_name: str, token: str) -> None:
        with self._guard:
            if token in self._held:
                return
            local = self._studies.setdefault(study_name, threading.Lock())
        local.acquire()
        try:
            held = self.database.hold_queue_lock(study_name)
            held.__enter__()
        except BaseException:
            local.release()
            raise
        with self._guard:
            self._held[token] = (study_name, held, time.monotonic())

    def release(self, token: str) -> None:
        with self._guard:
            entry = self._held.pop(token, None)
        if entry is None:
            return  # released already: an answer lost, or the lease ended
        study_name, held, _ = entry
        try:
            held.__exit__(None, None, None)
        finally:
            self._studies[study_name].release()

    def expire(self, lease: float = QUEUE_LOCK_LEASE_S) -> None:
        """Release every lock held longer than ``lease`` seconds: its holder died while holding it."""
        now = time.monotonic()
        with self._guard:
            expired = [(token, entry[0]) for token, entry in self._held.items() if now - entry[2] > lease]
        for token, study_name in expired:
            self.release(token)
            self.echo(f"study {study_name!r}: released a queue lock held over {lease:.0f} s (its worker is gone)")


def fail_stale_trials_of_every_study(storage: ProxiedStorage) -> None:
    """Fail the trials whose heartbeat went stale, in every study, and queue their retries.

    What each worker does for its own study when the database is its storage; behind the proxy,
    workers cannot read heartbeats, so the proxy does it for them.
    """
    running_ids: set[int] = set()
    for frozen in storage.get_all_studies():
        study = optuna.load_study(study_name=frozen.study_name, storage=storage)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        running_ids.update(trial_id(trial) for trial in running)
        if not running:
            continue
        # Each trial by the longer of the proxy's grace and the one its worker declared (GRACE_ATTR).
        optuna.storages.fail_stale_trials(study)
    storage.graced &= running_ids  # a trial that went on beating is RUNNING


def watch(storage: ProxiedStorage, every: float, stop: threading.Event, echo: Callable[[str], None]) -> None:
    """Until ``stop``: every ``every`` seconds, fail stale trials and end expired queue-lock leases."""
    # The first check waits a grace period: a trial that its worker's own ask created, not a take,
    # has its declared grace stored at its first heartbeat through a proxy.
    if stop.wait(max(storage.own_grace, every)):
        return
    while True:
        try:
            fail_stale_trials_of_every_study(storage)
            if storage.queue_locks is not None:
                storage.queue_locks.expire()
        except Exception as error:  # noqa: BLE001  (the next round tries again; the proxy must go on serving)
            echo(f"hpsearch proxy: stale-trial check failed, trying again in {every:g} s: {type(error).__name__}: {error}")
        if stop.wait(every):
            return


def serve(database: StudyDatabase, host: str, port: int, threads: int, echo: Callable[[str], None]) -> None:
    """Serve ``database`` (opened with ``storage_class=ProxiedStorage``) on ``host:port`` until the process ends."""
    storage = database.storage
    assert isinstance(storage, ProxiedStorage), "open the database with storage_class=ProxiedStorage"
    # A request waits on the database several times, and each time its thread wakes it waits for
    # the GIL while another request's thread computes, up to the switch interval (5 ms by
    # default). With many workers those waits add up: at 32, 0.5 ms raised the share of worker
    # time spent training from about 40% to 50-56% (benchmarks/scale.py).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    storage.attach(database, echo)
    stop = threading.Event()
    every = float(storage.heartbeat_interval or 10)
    watcher = threading.Thread(target=watch, args=(storage, every, stop, echo), name="stale-trials", daemon=True)
    watcher.start()
    try:
        optuna.storages.run_grpc_proxy_server(storage, host=host, port=port, thread_pool=ThreadPoolExecutor(threads))
    finally:
        stop.set()
