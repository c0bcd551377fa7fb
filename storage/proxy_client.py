"""A worker's side of the storage proxy: the study opened through ``grpc://host:port`` instead of a database URL.

``ProxyStorage`` is Optuna's ``GrpcStorageProxy`` with what a worker needs of ``QueuedRDBStorage``:
every call rides out a proxy that is away (``retry``), ``queue_only``, heartbeats (Optuna's gRPC
client has none, so a killed worker's trial would stay RUNNING), batched user attributes and the
epoch rows, the last three sent as the requests ``storage/proxy.py`` describes. The proxy, not the
worker, fails stale trials and queues their retries.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.trial import FrozenTrial, TrialState

from hpsearch.storage.attributes import WORKER_ATTR
from hpsearch.storage.database import StudyDatabase
from hpsearch.storage.epoch_metrics import to_db_row
from hpsearch.storage.errors import StorageError, StorageOpenError
from hpsearch.storage.optuna_seam import (
    RETRIED_STORAGE_METHODS,
    SENT_WRITE_ID_ATTR,
    HeartbeatStorage,
    ParamBatches,
    QueueEmpty,
    trial_id,
)
from hpsearch.storage.proxy import (
    EPOCH_KEY,
    HEARTBEAT_KEY,
    NOTHING_WAITING,
    PARAMS_KEY,
    QUEUE_LOCK_KEY,
    TAKE_PREFIX,
    USER_ATTRS_KEY,
    WAITING_PREFIX,
    WAITING_TRIALS_KEY,
)
from hpsearch.storage.retry import DatabaseRetry, HeartbeatLedger, retried_method
from hpsearch.storage.urls import ProxyAddress, StorageURLError, parse_proxy_url

# How long a command other than a worker waits for the proxy to answer before it says that nothing
# listens there (a worker waits for its --db-timeout, as for a database).
CONNECT_WAIT_S = 3.0
PROBE_STUDY_NAME = "hpsearch:proxy:probe"  # a study name no study has: the worker's first call, to see the proxy answer


def require_grpc() -> None:
    """``StorageURLError`` (one line) unless grpcio and protobuf, which the proxy needs, are installed."""
    try:
        import google.protobuf  # noqa: F401
        import grpc  # noqa: F401
    except ImportError:
        raise StorageURLError('the storage proxy (grpc://) needs grpcio and protobuf: pip install "hpsearch[proxy]"') from None


class TellEcho:
    """The read of a trial that Optuna's ``optimize`` makes right after its tell, answered here.

    ``optimize`` reads each trial for its tell, ends it, then reads it again for its callbacks.
    When nothing but the end was written to the trial since the first read, the second is the
    first ended as told (its ``datetime_complete`` this machine's clock): a request less per trial.
    """

    def __init__(self) -> None:
        self.read: FrozenTrial | None = None
        self.ended: FrozenTrial | None = None

    def remember(self, trial: FrozenTrial) -> None:
        self.read, self.ended = trial, None

    def written(self, written_id: int) -> None:
        if self.read is not None and trial_id(self.read) == written_id:
            self.read = None

    def told(self, told_id: int, state: TrialState, values: Sequence[float] | None) -> None:
        read, self.read = self.read, None
        if read is not None and trial_id(read) == told_id and read.state == TrialState.RUNNING and state.is_finished():
            ended = copy.deepcopy(read)
            ended.state, ended.values, ended.datetime_complete = state, values, datetime.now()
            self.ended = ended

    def answer(self, wanted_id: int) -> FrozenTrial | None:
        """The ended trial, once, if it is ``wanted_id``; any read after it asks the proxy."""
        ended, self.ended = self.ended, None
        return ended if ended is not None and trial_id(ended) == wanted_id else None


class ProxyStorage(optuna.storages.GrpcStorageProxy, HeartbeatStorage):
    """Optuna's gRPC client, with retries, heartbeats and the worker's queue-only mode."""

    queue_only: bool = False
    worker_name: str | None = None  # as QueuedRDBStorage's: the ``worker`` attribute of each trial it takes

    def __init__(
        self,
        address: ProxyAddress,
        retry: DatabaseRetry,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        **ignored: Any,  # on_stale and the stale-trial callback: the proxy runs those
    ) -> None:
        super().__init__(host=address.host, port=address.port)
        self.address, self.retry = address, retry
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.heartbeats = HeartbeatLedger()
        self.heartbeat_errors = self.heartbeats.errors
        self.param_batches = ParamBatches()
        self.tell_echo = TellEcho()

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if self.queue_only and template_trial is None:
            raise QueueEmpty("no trial is waiting in the queue")
        if template_trial is not None:
            # A queued trial: a retry after a lost answer must not queue it twice. The proxy's
            # storage finds the trial this write id made, if the first attempt made one.
            template_trial = copy.copy(template_trial)
            template_trial.system_attrs = {**template_trial.system_attrs, SENT_WRITE_ID_ATTR: uuid.uuid4().hex}
        return self.retry.call(super().create_new_trial, study_id, template_trial)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        trial = self.tell_echo.answer(trial_id) or self.retry.call(super().get_trial, trial_id)
        self.tell_echo.remember(trial)
        return trial

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.tell_echo.written(trial_id)  # a sampler's after_trial writes between the tell's read and the end
        self.retry.call(super().set_trial_system_attr, trial_id, key, value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.tell_echo.written(trial_id)
        self.retry.call(super().set_trial_user_attr, trial_id, key, value)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self.tell_echo.written(trial_id)
        self.retry.call(super().set_trial_intermediate_value, trial_id, step, intermediate_value)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        parent = super().set_trial_state_values
        attempts: list[int] = []

        def apply() -> bool:
            attempts.append(1)
            try:
                taken = parent(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                trial = optuna.storages.GrpcStorageProxy.get_trial(self, trial_id)
                # An earlier attempt was applied, and only its answer was lost.
                if len(attempts) > 1 and trial.state == state and (values is None or list(trial.values or []) == list(values)):
                    return True
                raise
            # No heartbeats.stored here, unlike take_waiting_trial: this take declared no grace, so
            # the heartbeat thread's first beat, which declares it, must not be skipped.
            return taken

        taken = self.retry.call(apply)
        if taken:
            self.tell_echo.told(trial_id, state, values)
        if taken and state == TrialState.RUNNING and self.worker_name is not None:
            self.set_trial_user_attrs(trial_id, {WORKER_ATTR: self.worker_name})  # the proxy's take names no worker
        return taken

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution) -> None:
        self.tell_echo.written(trial_id)
        if not self.param_batches.hold(trial_id, [param_name, param_value_internal, distribution_to_json(distribution)]):
            self.retry.call(super().set_trial_param, trial_id, param_name, param_value_internal, distribution)

    def params_batched(self, trial_id: int) -> AbstractContextManager[None]:
        """The trial's ``set_trial_param`` calls within the block, sent as one request at its end (``params_in_one_request``)."""
        return self.param_batches.batch(trial_id, lambda pending: self._send_params(trial_id, pending))

    def _send_params(self, trial_id: int, pending: list[Any]) -> None:
        try:
            self.retry.call(self._request, trial_id, PARAMS_KEY, pending)
        except Exception as error:
            import grpc  # installed: the request went through it

            # The proxy's ValueError (a distribution the study's cannot take), as Optuna's client raises it.
            if isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.UNKNOWN:
                raise ValueError(error.details()) from None
            raise

    # --- What Optuna's API lacks, sent as requests the proxy acts on. ----------------------------
    def _request(self, trial_id: int, key: str, value: Any) -> None:
        if key != HEARTBEAT_KEY:  # the rest change the trial
            self.tell_echo.written(trial_id)
        super().set_trial_system_attr(trial_id, key, value)

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any], beat: bool = False) -> None:
        """Set several user attributes of a running trial in one request (and one transaction).

        With ``beat``, the same request stores a heartbeat, and the write checks that the trial
        still runs, as ``QueuedRDBStorage.set_trial_user_attrs`` does.
        """
        beat = beat and self.heartbeat_interval is not None
        request = {"attrs": dict(attrs), "beat": {"grace": self.declared_grace} if beat else None}
        self.retry.call(self._request, trial_id, USER_ATTRS_KEY, request)
        if beat:
            self.heartbeats.stored(trial_id)

    def write_epoch_row(self, trial_id: int, row: Mapping[str, Any], report: tuple[int, float] | None = None) -> None:
        """Store one row of ``hpsearch_epoch_metrics`` through the proxy, with ``report`` (step, value) in the same
        request and transaction; an upsert and Optuna's report, so a retry is exact."""
        request = {"row": to_db_row(trial_id, row), "report": list(report) if report is not None else None}
        self.retry.call(self._request, trial_id, EPOCH_KEY, request)

    def record_heartbeat(self, trial_id: int) -> None:
        """A heartbeat, stored by the proxy at its database's time; it never raises, so its thread lives on."""
        self.heartbeats.beat(trial_id, self.retry, float(self.heartbeat_interval or 1),
                             lambda: self._request(trial_id, HEARTBEAT_KEY, {"grace": self.declared_grace}))

    @property
    def declared_grace(self) -> int:
        """This worker's grace period, sent with its takes and heartbeats: the proxy judges its trials by it (storage/proxy.py)."""
        return self.grace_period or 2 * (self.heartbeat_interval or 1)

    def heartbeat_age(self, trial_id: int) -> float:
        """Seconds since this process last had a heartbeat of ``trial_id`` stored (0 if it never took it)."""
        return self.heartbeats.age(trial_id)

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return None

    def take_waiting_trial(self, study_id: int) -> int | None:
        """Have the proxy take the study's first WAITING trial for this worker: its id, or None when none waits.

        One request (``TAKE_PREFIX``) where ``Study.ask`` would read every WAITING trial and try
        each. The take id makes a repeat after a lost answer return the same trial.
        """
        request = {"study_id": study_id, "worker": self.worker_name, "grace": self.declared_grace, "take_id": uuid.uuid4().hex}
        send = super().get_study_id_from_name

        def attempt() -> int:
            try:
                return send(TAKE_PREFIX + json.dumps(request))
            finally:
                request["repeat"] = True  # a later attempt may find the trial this one took

        taken = self.retry.call(attempt)
        if taken == NOTHING_WAITING:
            return None
        self.heartbeats.stored(taken)  # the proxy stored the first heartbeat with the take
        return taken

    def has_waiting_trial(self, study_id: int) -> bool:
        """Whether a trial of the study waits in the queue: one request, where reading the study sends every trial."""
        return self.retry.call(super().get_study_id_from_name, WAITING_PREFIX + json.dumps({"study_id": study_id})) == 1

    def create_waiting_trials(self, study_id: int, points: Sequence[Mapping[str, Any]]) -> None:
        """Queue a WAITING trial for each point in one request, which the proxy writes in one transaction.

        The write id makes a retry after a lost answer queue nothing more.
        """
        if points:
            request = {"points": [dict(point) for point in points], "write_id": uuid.uuid4().hex}
            self.retry.call(super().set_study_system_attr, study_id, WAITING_TRIALS_KEY, request)

    def queue_lock_request(self, study_name: str, token: str, take: bool) -> None:
        # Study id 0: the request names its study, which may not exist yet.
        self.retry.call(super().set_study_system_attr, 0, QUEUE_LOCK_KEY, {"study": study_name, "token": token, "take": take})


for _name in RETRIED_STORAGE_METHODS:  # each retried while the proxy is away
    if _name not in vars(ProxyStorage):  # those defined above retry what they send themselves
        setattr(ProxyStorage, _name, retried_method(optuna.storages.GrpcStorageProxy, _name))


class ProxyEpochTable:
    """``hpsearch_epoch_metrics`` as a worker behind the proxy sees it: it writes rows; reading is the database's."""

    def __init__(self, storage: ProxyStorage) -> None:
        self.storage, self.retry = storage, storage.retry

    def write(self, trial_id: int, row: Mapping[str, Any], report: tuple[int, float] | None = None) -> None:
        self.storage.write_epoch_row(trial_id, row, report)

    def rows_by_trial(self, study_name: str, through_epoch: int) -> dict[int, list[dict[str, Any]]]:
        raise StorageError(
            "the pareto pruner reads other trials' epoch rows, which the storage proxy does not serve; run this "
            "multi-objective study's workers on the database URL, or with --pruner none"
        )


class ProxiedStudyDatabase(StudyDatabase):
    """A study opened through an ``hpsearch proxy``: Optuna's storage, the epoch rows and the queue lock all go through it."""

    storage: ProxyStorage

    @property
    def engine(self) -> Any:
        raise StorageError(f"{self.shown_url} is the storage proxy; reading tables needs the database URL")

    @property
    def epoch_table(self) -> ProxyEpochTable:  # type: ignore[override]
        if self._epoch_table is None:
            self._epoch_table = ProxyEpochTable(self.storage)  # type: ignore[assignment]
        return self._epoch_table  # type: ignore[return-value]

    @contextmanager
    def _take_queue_lock(self, study_name: str) -> Iterator[bool]:
        token = uuid.uuid4().hex
        self.storage.queue_lock_request(study_name, token, take=True)
        try:
            yield False  # the proxy does not say whether another client held it
        finally:
            self.storage.queue_lock_request(study_name, token, take=False)

    def close(self) -> None:
        self.storage.close()


def open_through_proxy(url: str, *, retry: DatabaseRetry | None = None, wait: bool = False, **options: Any) -> StudyDatabase:
    """The study database behind the ``hpsearch proxy`` at ``url`` (``grpc://host:port``), for a worker or a search.

    ``StorageURLError`` without grpcio, ``StorageOpenError`` when nothing answers at that address
    within ``CONNECT_WAIT_S``; ``options`` are the heartbeat settings ``StudyDatabase.open_for_search``
    takes. With ``wait`` (a worker, which a job array may start before its proxy), a proxy that does
    not answer is waited for as a database is, through ``retry``: ``DatabaseUnavailable`` once it has
    not answered for the retry's timeout (``--db-timeout``).
    """
    require_grpc()
    address = parse_proxy_url(url)
    retry = retry if retry is not None else DatabaseRetry(url)
    storage = ProxyStorage(address, retry, **options)
    try:
        if wait:
            # One cheap call; "nothing listens" is gRPC's UNAVAILABLE, which the retry waits out.
            retry.call(optuna.storages.GrpcStorageProxy.get_study_id_from_name, storage, PROBE_STUDY_NAME)
        else:
            storage.wait_server_ready(timeout=CONNECT_WAIT_S)
    except KeyError:
        pass  # the proxy answered: no study has that name
    except ConnectionError:
        storage.close()
        raise StorageOpenError(
            f"no storage proxy answers at {address} (waited {CONNECT_WAIT_S:g} s); start one with hpsearch proxy --storage "
            f"DATABASE_URL --host HOST --port {address.port}, or check the host and port"
        ) from None
    except BaseException:
        storage.close()
        raise
    return ProxiedStudyDatabase(url, None, storage, retry, writable=True)
