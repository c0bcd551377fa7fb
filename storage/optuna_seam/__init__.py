"""The one package of hpsearch that relies on Optuna's private API and on its database layout.

Everything else in hpsearch uses Optuna's public API and imports what it needs of the things
below from here (``hpsearch.storage.optuna_seam``, which re-exports them). Each is checked against
the installed Optuna by ``tests/storage/test_optuna_seam.py`` (on a SQLite file and on
PostgreSQL), and Optuna is pinned to the major version that test passes on (``optuna>=5,<6`` in
``pyproject.toml``). When Optuna changes one of them, that test says which, and this package is
the only one to change. Its modules:

- ``tables.py``: Optuna's tables and their encodings (5);
- ``trial.py``: a trial's storage id, its cached copy, its parameters in one request (1, 3, 8);
- ``queued_storage.py``: :class:`QueuedRDBStorage`, the storage every hpsearch study runs on (2 to 4, 9);
- ``frozen_trials.py``: trials read with Core SQL (9);
- ``study.py``: the study and sampler side (6, 7, 8, 10, 11).

Private things relied on, and why:

1. ``Trial._trial_id`` and ``FrozenTrial._trial_id``, the storage's id of a trial, read by
   :func:`trial_id`. The id, not the trial number, is what the storage methods take and what
   ``hpsearch_epoch_metrics`` keys its rows by. Optuna's only other routes to it are private too
   (``Study._study_id``, ``Study._storage``) or cost two queries per call.
2. ``RDBStorage._create_new_trial(study_id, template_trial)``: Optuna's cached storage, which
   ``optuna.create_study`` wraps around every ``RDBStorage``, creates trials through this method
   of its backend, not through the public ``create_new_trial``. :class:`QueuedRDBStorage`
   overrides it so that a worker with ``queue_only`` set never starts a fresh trial.
3. ``optuna.storages._rdb.storage._create_scoped_session(scoped_session, ignore_integrity_error)``
   and the ``RDBStorage.scoped_session`` attribute: the session Optuna's own writes use (commit on
   exit, rollback and ``StorageInternalError`` on a database error), used by
   :meth:`QueuedRDBStorage.set_trial_user_attrs` so that its batch behaves like Optuna's writes;
   and ``RDBStorage._set_trial_intermediate_value_without_commit(session, ...)``, Optuna's report
   inside such a session, so that :meth:`QueuedRDBStorage.write_with_report` stores an epoch's row
   and its report in one transaction. ``Trial._cached_frozen_trial``, the trial as its worker read
   it when taking it and as it has written since: :func:`as_taken` reads it, and
   :func:`remember_report` adds a report stored that way to it, as ``Trial.report`` does.
4. ``optuna.storages._rdb.models``: ``TrialModel.find_or_raise_by_id(trial_id, session)`` (a
   ``KeyError`` for an unknown trial, ``NOT_FOUND_MSG``) and ``TrialUserAttributeModel.__table__``,
   for the same batch; ``TrialModel.__table__``, whose insert returns a batch of queued trials' ids
   in the order of its rows.
5. Optuna's table layout, named here once as SQLAlchemy table clauses (:data:`STUDIES`,
   :data:`TRIALS`, ...) holding only the columns hpsearch reads or writes, and the encodings in
   them: a trial's ``state`` is the ``TrialState`` name, values and intermediate values are a
   number plus a type (``FINITE``, ``INF_POS``, ``INF_NEG``, ``NAN``; the number is NULL unless
   ``FINITE``), attributes are JSON in ``value_json``, ``study.set_metric_names`` is the study
   system attribute ``study:metric_names``, and trial datetimes are naive UTC. The take of a queued
   trial writes ``trials``; ``export.py`` and ``epoch_metrics.py`` read these tables with set-based
   SQL instead of building one ``FrozenTrial`` per trial.

6. ``optuna.storages._heartbeat.BaseHeartbeat``, as :data:`HeartbeatStorage`: the storage proxy's client derives
   from it so that ``study.optimize`` runs its heartbeat thread, and so implements its abstract
   methods; the private ``_get_stale_trial_ids`` is implemented in ``study.py``.
7. ``Study._get_trials(deepcopy, states, use_cache)``: how ``GPSampler`` and ``TPESampler`` read
   the trials they learn from. :class:`PrunedAsComplete` answers it with pruned trials shown as
   complete at a stand-in value, so the samplers learn from pruned trials.
8. ``Study._storage`` (and ``_CachedStorage._backend``, the database behind it) and
   ``Study._study_id``: :func:`enqueue_points` queues a batch of trials in one transaction, and
   reads on through Optuna's cache find them as they find other workers' trials.
   :func:`params_in_one_request` finds the storage behind a trial's cache the same way.

9. ``RDBStorage._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)``: how
   Optuna's cached storage reads new and unfinished trials, and ``RDBStorage._set_trial_param(...,
   previous_distribution)``: how it stores a suggested parameter, and
   ``RDBStorage._get_stale_trial_ids(study_id)``: how ``fail_stale_trials`` finds the trials whose
   heartbeat is older than the grace period. :class:`QueuedRDBStorage` answers them, and
   ``get_trial``, with Core SQL over the tables of 5 (:func:`read_trials`)
   instead of the ORM, and raises as Optuna does (``KeyError(models.NOT_FOUND_MSG)`` for an
   unknown study or trial, ``UpdateFinishedTrialError``, an incompatible distribution). Within
   :func:`params_in_one_request` it holds the parameters back and stores them in one transaction.

10. ``QMCSampler._find_sample_id(study, search_space)``: which point of its sequence a trial
   takes. Optuna counts the points in a study system attribute, read and then written (its own
   TODO says the two are not atomic): two workers asking at once read the same count and draw the
   same point. :class:`NumberedQMCSampler` gives each trial the point its trial number names.
11. ``Study._pop_waiting_trial_id()``: how ``Study.ask`` takes a queued trial. Optuna's reads
   every WAITING trial and tries to take each in turn, and workers asking at once all try them in
   the same order, so at 32 workers most tries lost a race to a peer. :class:`QueueTakingStudy`
   asks a storage that has ``take_waiting_trial`` (hpsearch's, on a database URL or through its
   proxy) for the first one instead: one statement, and through the proxy one request. Optuna's
   cache (``_CachedStorage``, its ``_backend`` and ``_trial_id_to_study_id_and_number``) sets a
   parameter only on a trial it has read, so a trial taken that it has not seen makes it read.

Behaviour of public methods relied on: ``Study.ask`` of a plain ``Study`` takes a queued trial
by calling ``set_trial_state_values(trial_id, RUNNING)`` on the storage and moves on to the next
WAITING trial when that returns False; :class:`QueuedRDBStorage` makes that take one atomic ``UPDATE``.
"""

from hpsearch.storage.optuna_seam.frozen_trials import (
    read_trials,
)
from hpsearch.storage.optuna_seam.queued_storage import (
    GRACE_ATTR,
    RETRIED_STORAGE_METHODS,
    SENT_WRITE_ID_ATTR,
    TAKE_ID_ATTR,
    WRITE_ID_ATTR,
    QueuedRDBStorage,
    QueueEmpty,
)
from hpsearch.storage.optuna_seam.study import (
    HeartbeatStorage,
    NumberedQMCSampler,
    PrunedAsComplete,
    QueueTakingStudy,
    enqueue_points,
    stand_in_values,
    taking_queued_trials_at_once,
)
from hpsearch.storage.optuna_seam.tables import (
    METRIC_NAMES_ATTR,
    NONFINITE_VALUES,
    OPTUNA_TABLES,
    STUDIES,
    STUDY_DIRECTIONS,
    STUDY_SYSTEM_ATTRIBUTES,
    STUDY_USER_ATTRIBUTES,
    TRIAL_HEARTBEATS,
    TRIAL_INTERMEDIATE_VALUES,
    TRIAL_PARAMS,
    TRIAL_SYSTEM_ATTRIBUTES,
    TRIAL_USER_ATTRIBUTES,
    TRIAL_VALUES,
    TRIALS,
    ValueType,
    state_is,
    stored_now,
)
from hpsearch.storage.optuna_seam.trial import (
    ParamBatches,
    as_taken,
    params_in_one_request,
    remember_report,
    reported,
    trial_id,
)

__all__ = [
    "GRACE_ATTR",
    "METRIC_NAMES_ATTR",
    "NONFINITE_VALUES",
    "OPTUNA_TABLES",
    "RETRIED_STORAGE_METHODS",
    "SENT_WRITE_ID_ATTR",
    "STUDIES",
    "STUDY_DIRECTIONS",
    "STUDY_SYSTEM_ATTRIBUTES",
    "STUDY_USER_ATTRIBUTES",
    "TAKE_ID_ATTR",
    "TRIALS",
    "TRIAL_HEARTBEATS",
    "TRIAL_INTERMEDIATE_VALUES",
    "TRIAL_PARAMS",
    "TRIAL_SYSTEM_ATTRIBUTES",
    "TRIAL_USER_ATTRIBUTES",
    "TRIAL_VALUES",
    "WRITE_ID_ATTR",
    "HeartbeatStorage",
    "NumberedQMCSampler",
    "ParamBatches",
    "PrunedAsComplete",
    "QueueEmpty",
    "QueueTakingStudy",
    "QueuedRDBStorage",
    "ValueType",
    "as_taken",
    "enqueue_points",
    "params_in_one_request",
    "read_trials",
    "remember_report",
    "reported",
    "stand_in_values",
    "state_is",
    "stored_now",
    "taking_queued_trials_at_once",
    "trial_id",
]
