"""The contract of storage/optuna_seam.py with the installed Optuna, on a real SQLite file and on
the real PostgreSQL server.

hpsearch relies on a few private things of Optuna, all used in storage/optuna_seam.py only (its
docstring lists them; a test here checks that no other module uses them). Each test here checks
one of them against Optuna's own behaviour, and each assertion says what hpsearch relies on, so
that an Optuna upgrade that breaks the seam fails here, by name, before it fails anywhere else.
pyproject.toml pins Optuna to the major version this file passes on.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models as optuna_models
from optuna.trial import TrialState

from hpsearch.storage import optuna_seam as seam
from hpsearch.storage.database import StudyDatabase
from hpsearch.storage.optuna_seam import QueuedRDBStorage, QueueEmpty, trial_id

optuna.logging.set_verbosity(optuna.logging.ERROR)
X = FloatDistribution(0, 1)
SEAM = "storage/optuna_seam.py"
NO_SUCH_TRIAL = -1  # storage ids are positive


@pytest.fixture
def east_of_utc(monkeypatch: pytest.MonkeyPatch):
    """Local time 5:30 ahead of UTC (a POSIX TZ string, no tz database needed), restored afterwards."""
    monkeypatch.setenv("TZ", "HPS-05:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def storage(storage_url: str):
    storage = StudyDatabase.open_for_search(storage_url).storage
    yield storage
    storage.engine.dispose()


def test_the_pin_admits_the_installed_optuna() -> None:
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    pins = [Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "optuna"]
    assert len(pins) == 1 and pins[0].specifier, "pyproject.toml pins Optuna to the major version this test passes on"
    assert optuna.__version__ in pins[0].specifier, (
        f"the installed Optuna {optuna.__version__} is outside the pin {pins[0]}; run this file on it, "
        f"then move the pin in pyproject.toml"
    )


# Optuna's private modules, and the private attributes of its objects that the seam reads.
PRIVATE_USE = re.compile(
    r"optuna(\.\w+)*\._\w+|\._(trial_id|study_id|storage|backend|cached_frozen_trial|pop_waiting_trial_id|get_trials)\b"
)


def test_no_module_but_the_seam_uses_optunas_private_api() -> None:
    root = Path(__file__).parents[2]
    found = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for folder in ("models", "trainers", "storage", "search")
        for path in sorted((root / folder).rglob("*.py"))
        if path != root / SEAM
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE_USE.search(line)
    ]
    assert found == [], f"Optuna's private API outside {SEAM} (move it into the seam, under a test here): {found}"


# --- 1. Trial._trial_id ------------------------------------------------------------------------


def test_trial_id_is_the_id_optuna_stores_the_trial_under(storage: QueuedRDBStorage, study_name: str) -> None:
    study = optuna.create_study(study_name=study_name, storage=storage)
    study.enqueue_trial({"x": 0.25})
    asked = [study.ask({"x": X}) for _ in range(3)]  # the first is the queued trial
    study.tell(asked[1], 0.5)
    study_id = storage.get_study_id_from_name(study_name)
    stored = dict(_rows(storage, seam.TRIALS, "number", "trial_id", study_id=study_id))

    for trial in [*asked, *study.get_trials()]:
        kind = type(trial).__name__
        public = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        assert trial_id(trial) == public, (
            f"hpsearch reads a {kind}'s storage id from its private _trial_id (seam.trial_id); "
            f"Optuna's public lookup by study and number gives {public}, not {trial_id(trial)}"
        )
        assert storage.get_trial(trial_id(trial)).number == trial.number, (
            f"storage.get_trial(seam.trial_id({kind})) must return that trial: the objective reads it so"
        )
        assert stored[trial.number] == trial_id(trial), (
            "hpsearch_epoch_metrics rows are keyed by seam.trial_id and joined to trials.trial_id"
        )


# --- 2. RDBStorage._create_new_trial --------------------------------------------------------------


def test_create_new_trial_is_how_optuna_creates_every_trial(
    storage: QueuedRDBStorage, study_name: str, monkeypatch
) -> None:
    parameters = list(inspect.signature(optuna.storages.RDBStorage._create_new_trial).parameters)
    assert parameters == ["self", "study_id", "template_trial"], (
        f"QueuedRDBStorage overrides RDBStorage._create_new_trial(study_id, template_trial); Optuna's is {parameters}"
    )
    created: list[bool] = []  # whether each trial came from a template
    original = storage._create_new_trial

    def spy(study_id: int, template_trial=None):
        created.append(template_trial is not None)
        return original(study_id, template_trial)

    monkeypatch.setattr(storage, "_create_new_trial", spy)
    study = optuna.create_study(study_name=study_name, storage=storage)
    study.ask()
    study.enqueue_trial({"x": 0.5})
    study.add_trial(optuna.trial.create_trial(params={"x": 0.1}, distributions={"x": X}, value=0.1))

    assert created == [False, True, True], (
        "Optuna's cached storage (which optuna.create_study wraps around an RDBStorage) must create every "
        "trial through its backend's _create_new_trial: the fresh one Study.ask starts without a template, "
        f"queued and added ones with one; hpsearch's queue-only override relies on it. Calls seen: {created}"
    )


def test_queue_only_takes_queued_trials_and_never_starts_a_fresh_one(
    storage: QueuedRDBStorage, study_name: str
) -> None:
    study = optuna.create_study(study_name=study_name, storage=storage)
    storage.queue_only = True
    with pytest.raises(QueueEmpty):
        study.ask()
    assert study.get_trials() == [], "with queue_only, Study.ask on an empty queue must create no trial"

    for x in (0.1, 0.2):
        study.enqueue_trial({"x": x})  # queued trials come from a template: allowed under queue_only
    seen: list[float] = []
    # The orchestrator runs its trials with study.optimize (which runs Optuna's heartbeat thread);
    # the empty queue ends it, since Study.ask raises outside the objective, past ``catch``.
    with pytest.raises(QueueEmpty):
        study.optimize(lambda trial: seen.append(trial.suggest_float("x", 0, 1)) or 0.0, n_trials=5, catch=(Exception,))
    assert sorted(seen) == [0.1, 0.2], "study.optimize under queue_only must run exactly the queued trials"
    assert len(study.get_trials()) == 2, "QueueEmpty must stop study.optimize before a fresh trial is created"


def test_heartbeat_retries_are_created_under_queue_only(sqlite_url: str, study_name: str) -> None:
    storage = StudyDatabase.open_for_search(
        sqlite_url,
        heartbeat_interval=1,
        grace_period=1,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1, inherit_intermediate_values=True),
    ).storage
    try:
        study = optuna.create_study(study_name=study_name, storage=storage)
        killed = study.ask({"x": X})
        storage.record_heartbeat(trial_id(killed))
        time.sleep(2.5)
        storage.queue_only = True
        optuna.storages.fail_stale_trials(study)
        states = [t.state for t in study.get_trials()]
        assert states == [TrialState.FAIL, TrialState.WAITING], (
            "a stale trial must be failed and its retry queued from a template even under queue_only, "
            f"so that a worker resumes it; states: {states}"
        )
        retry = study.ask()
        assert RetryHeartbeatStaleTrialCallback.retry_history(storage.get_trial(trial_id(retry))) == [killed.number]
    finally:
        storage.engine.dispose()


# --- The take of a queued trial (public set_trial_state_values, as Study.ask calls it) -----------


def test_the_take_is_atomic_and_study_ask_moves_past_a_taken_trial(
    storage: QueuedRDBStorage, study_name: str, east_of_utc, monkeypatch
) -> None:
    study = optuna.create_study(study_name=study_name, storage=storage)
    for x in (0.1, 0.2, 0.3):
        study.enqueue_trial({"x": x})
    first, second, third = study.get_trials()

    assert storage.set_trial_state_values(trial_id(first), TrialState.RUNNING), "the first take of a WAITING trial wins"
    assert not storage.set_trial_state_values(trial_id(first), TrialState.RUNNING), (
        "a second take of the same trial must return False, which Study.ask reads as 'taken by another worker'"
    )

    takes: list[int] = []
    take = storage.set_trial_state_values

    def racing(trial: int, state: TrialState, values=None) -> bool:
        if not takes:  # another worker takes the trial just before this one does
            assert take(trial, state, values)
        takes.append(trial)
        return take(trial, state, values)

    monkeypatch.setattr(storage, "set_trial_state_values", racing)
    asked = study.ask()
    monkeypatch.undo()
    assert takes == [trial_id(second), trial_id(third)] and asked.number == third.number, (
        "Study.ask must take a queued trial with storage.set_trial_state_values(trial_id, RUNNING), and move on "
        f"to the next WAITING trial when that returns False; it tried {takes} and returned trial {asked.number}"
    )

    taken = storage.get_trial(trial_id(first))
    assert taken.state == TrialState.RUNNING
    drift = abs(taken.datetime_start - datetime.now())
    assert drift < timedelta(minutes=1), (
        "Optuna stores trial datetimes as naive UTC and shows them in local time; the take must write "
        f"datetime_start the same way (seam.stored_now), but it reads back {drift} off"
    )
    fresh = study.ask()  # the queue is empty: Optuna creates and starts this trial itself
    gap = abs(taken.datetime_start - storage.get_trial(trial_id(fresh)).datetime_start)
    assert gap < timedelta(minutes=1), f"the take and Optuna's own new trial must store one clock; {gap} apart"



def test_a_take_passes_over_a_trial_another_worker_is_taking(postgres_url: str, study_name: str) -> None:
    storage = StudyDatabase.open_for_search(postgres_url).storage
    try:
        study = optuna.create_study(study_name=study_name, storage=storage)
        study.enqueue_trial({"x": 0.1})
        (queued,) = study.get_trials()
        taking = storage.engine.connect()  # another worker, inside its take of the trial
        taking.execute(sa.text("SELECT trial_id FROM trials WHERE trial_id = :i FOR UPDATE"), {"i": trial_id(queued)})
        answer: list[bool] = []
        taker = threading.Thread(target=lambda: answer.append(storage.set_trial_state_values(trial_id(queued), TrialState.RUNNING)))
        taker.start()
        taker.join(5)
        held = taker.is_alive()
        taking.rollback()  # the other take failed: the trial is free again
        taker.join()
        taking.close()
        assert not held and answer == [False], (
            "a take must pass over a trial whose row another worker has locked (FOR UPDATE SKIP LOCKED), not wait for its "
            "commit: Study.ask moves on to the next WAITING trial"
        )
        assert storage.set_trial_state_values(trial_id(queued), TrialState.RUNNING), "once free, the trial is taken"
    finally:
        storage.engine.dispose()


def test_a_queue_taking_study_takes_the_first_waiting_trial_by_number(storage: QueuedRDBStorage, study_name: str, storage_url: str) -> None:
    storage.worker_name = "host:1:cpu"
    study = seam.taking_queued_trials_at_once(optuna.create_study(study_name=study_name, storage=storage))
    assert isinstance(study, optuna.Study)
    for x in (0.1, 0.2, 0.3):
        study.enqueue_trial({"x": x})
    assert storage.set_trial_state_values(trial_id(study.trials[1]), TrialState.RUNNING)  # a peer took the second
    first, third = study.ask(), study.ask()
    assert (first.number, first.suggest_float("x", 0, 1)) == (0, 0.1)
    assert (third.number, third.suggest_float("x", 0, 1)) == (2, 0.3)
    assert study.trials[0].user_attrs["worker"] == "host:1:cpu"  # the take names its worker, as Optuna's way does
    # Queued by another process after this one last read the study: Optuna's cache must learn of it
    # before the trial's parameter is set.
    peer = StudyDatabase.open_for_search(storage_url)
    try:
        optuna.load_study(study_name=study_name, storage=peer.storage).enqueue_trial({"x": 0.7})
    finally:
        peer.close()
    late = study.ask()
    assert (late.number, late.suggest_float("x", 0, 1)) == (3, 0.7)
    fresh = study.ask()  # nothing waits: Optuna starts a new trial
    assert fresh.number == 4 and [t.state for t in study.trials] == [TrialState.RUNNING] * 5


def test_workers_taking_queued_trials_at_once_each_take_a_different_one(storage_url: str, study_name: str) -> None:
    databases = [StudyDatabase.open_for_search(storage_url) for _ in range(4)]
    try:
        study = optuna.create_study(study_name=study_name, storage=databases[0].storage)
        seam.enqueue_points(study, [{"x": i / 40} for i in range(40)])
        study_id = databases[0].storage.get_study_id_from_name(study_name)

        def take_all(database: StudyDatabase) -> list[int]:
            taken = []
            while (trial := database.storage.take_waiting_trial(study_id)) is not None:
                taken.append(trial)
            return taken

        with ThreadPoolExecutor(4) as pool:
            takes = list(pool.map(take_all, databases))
        every = [trial for worker in takes for trial in worker]
        assert sorted(every) == sorted(trial_id(t) for t in study.get_trials()), "each trial taken once"
        assert all(t.state == TrialState.RUNNING for t in study.get_trials())
    finally:
        for database in databases:
            database.close()


def test_a_take_of_the_first_waiting_trial_passes_over_one_another_worker_is_taking(postgres_url: str, study_name: str) -> None:
    storage = StudyDatabase.open_for_search(postgres_url).storage
    try:
        study = optuna.create_study(study_name=study_name, storage=storage)
        study.enqueue_trial({"x": 0.1})
        study.enqueue_trial({"x": 0.2})
        first, second = study.get_trials()
        taking = storage.engine.connect()  # another worker, inside its take of the first trial
        taking.execute(sa.text("SELECT trial_id FROM trials WHERE trial_id = :i FOR UPDATE"), {"i": trial_id(first)})
        answer: list[int | None] = []
        study_id = storage.get_study_id_from_name(study_name)
        taker = threading.Thread(target=lambda: answer.append(storage.take_waiting_trial(study_id)))
        taker.start()
        taker.join(5)
        held = taker.is_alive()
        taking.rollback()
        taker.join()
        taking.close()
        assert not held and answer == [trial_id(second)], "the take must pass over a row another worker has locked"
    finally:
        storage.engine.dispose()


def _trials_of_every_kind(storage: QueuedRDBStorage, study_name: str) -> tuple[optuna.Study, optuna.Trial]:
    """A study of two objectives with a trial in each state; the first (returned) COMPLETE at infinite
    values, with a NaN and an infinite report, a user and a system attribute, and a parameter of each kind."""
    study = optuna.create_study(study_name=study_name, storage=storage, directions=["minimize", "maximize"])
    done = study.ask({"x": X, "n": IntDistribution(1, 9, log=True), "c": CategoricalDistribution(["a", None, 3, 2.5, True])})
    # Trial.report refuses multi-objective trials; the storage keeps intermediate values all the same.
    storage.set_trial_intermediate_value(trial_id(done), 1, float("nan"))
    storage.set_trial_intermediate_value(trial_id(done), 2, float("inf"))
    done.set_user_attr("lr_history", [0.1, 0.01])
    storage.set_trial_system_attr(trial_id(done), "note", "v")
    study.tell(done, [float("inf"), float("-inf")])
    study.tell(study.ask({"x": X}), [0.25, 0.75])
    study.tell(study.ask(), state=TrialState.FAIL)
    study.ask()
    study.enqueue_trial({"x": 0.5})
    return study, done


def test_trials_are_read_as_optuna_reads_them(storage: QueuedRDBStorage, study_name: str, east_of_utc) -> None:
    _trials_of_every_kind(storage, study_name)
    study_id = storage.get_study_id_from_name(study_name)
    optunas = optuna.storages.RDBStorage
    ids = [trial_id(t) for t in optunas.get_all_trials(storage, study_id, deepcopy=False)]
    # repr: NaN is not equal to itself, so FrozenTrial's == cannot compare these.
    for each in ids:
        ours, theirs = storage.get_trial(each), optunas.get_trial(storage, each)
        assert repr(ours) == repr(theirs) and list(ours.params) == list(theirs.params), (
            "get_trial must build the FrozenTrial RDBStorage builds: values, datetimes in local time, params in order, "
            f"attributes, reports; got {ours!r}, Optuna {theirs!r}"
        )
    complete = (TrialState.COMPLETE,)
    for states, included, after in ((None, set(), -1), (complete, set(), -1), (None, {ids[0], ids[2]}, ids[2]), (None, set(ids), ids[-1])):
        ours = storage._get_trials(study_id, states, included, after)
        assert repr(ours) == repr(optunas._get_trials(storage, study_id, states, included, after)), (
            f"_get_trials({states}, {included}, {after}) must select and build the trials RDBStorage does"
        )
    for read in (lambda: storage.get_trial(NO_SUCH_TRIAL), lambda: storage._get_trials(NO_SUCH_TRIAL, None, set(), -1)):
        with pytest.raises(KeyError):
            read()



def test_a_parameter_is_stored_and_refused_as_optuna_stores_and_refuses_it(storage: QueuedRDBStorage, study_name: str) -> None:
    study = optuna.create_study(study_name=study_name, storage=storage)
    ours, theirs = study.ask(), study.ask()
    choice = CategoricalDistribution(["a", None, 3])
    for name, value, distribution in (("x", 0.25, X), ("c", 1.0, choice), ("n", 4.0, IntDistribution(1, 9, log=True))):
        storage._set_trial_param(trial_id(ours), name, value, distribution, None)
        optuna.storages.RDBStorage._set_trial_param(storage, trial_id(theirs), name, value, distribution, None)
    rows = _rows(storage, seam.TRIAL_PARAMS, "trial_id", "param_name", "param_value", "distribution_json")
    by_trial = {tid: sorted(row[1:] for row in rows if row[0] == tid) for tid in (trial_id(ours), trial_id(theirs))}
    assert by_trial[trial_id(ours)] == by_trial[trial_id(theirs)], "a parameter's row must be the one Optuna writes"
    assert storage.get_trial(trial_id(ours)).params == {"x": 0.25, "c": None, "n": 4}

    with pytest.raises(ValueError):  # Optuna's refusal of a name whose distribution changed kind
        storage._set_trial_param(trial_id(ours), "y", 0.5, X, IntDistribution(1, 9))
    with pytest.raises(ValueError):
        storage._set_trial_param(trial_id(ours), "x2", 1.0, X, CategoricalDistribution(["p", "q"]))
    study.tell(ours, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage._set_trial_param(trial_id(ours), "late", 0.5, X, None)
    with pytest.raises(KeyError):
        storage._set_trial_param(NO_SUCH_TRIAL, "x", 0.5, X, None)


def test_a_trials_parameters_drawn_in_one_block_are_stored_in_one_transaction(storage: QueuedRDBStorage, study_name: str) -> None:
    study = optuna.create_study(study_name=study_name, storage=storage)  # Optuna's cache in front, as a worker's
    commits: list[int] = []
    statements: list[str] = []
    sa.event.listen(storage.engine, "commit", lambda connection: commits.append(1))
    sa.event.listen(storage.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    trial = study.ask()
    commits.clear()
    statements.clear()
    with seam.params_in_one_request(trial):
        point = {"x": trial.suggest_float("x", 0, 1), "n": trial.suggest_int("n", 1, 9), "c": trial.suggest_categorical("c", ["a", "b"])}
        assert commits == [] and trial.params == point
    assert len(commits) == 1
    # Past the cache's read of the trial: its state, the study's distributions of the three names, the three rows.
    stored = [s.split()[:3] for s in statements if not s.startswith(("SELECT trials.trial_id", "SELECT trial_params.trial_id"))]
    assert stored == [["SELECT", "trials.state,", "trials.study_id"], ["SELECT", "(SELECT", "trial_params.distribution_json"],
                      ["INSERT", "INTO", "trial_params"]]
    assert storage.get_trial(trial_id(trial)).params == point

    broken = study.ask()
    with pytest.raises(RuntimeError), seam.params_in_one_request(broken):
        broken.suggest_float("x", 0, 1)
        raise RuntimeError("the model cannot be built")
    assert storage.get_trial(trial_id(broken)).params == {}  # nothing stored of a point that failed to be drawn
    study.tell(broken, state=TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError), seam.params_in_one_request(broken):
        broken.suggest_float("y", 0, 1)


# --- 4. The RDB models' tables and encodings -------------------------------------------------------


def test_a_trials_end_report_and_attributes_are_stored_as_optuna_stores_them(storage: QueuedRDBStorage, study_name: str) -> None:
    for model, columns in (
        (optuna_models.TrialValueModel, {"trial_id", "objective", "value", "value_type"}),
        (optuna_models.TrialIntermediateValueModel, {"trial_id", "step", "intermediate_value", "intermediate_value_type"}),
        (optuna_models.TrialUserAttributeModel, {"trial_id", "key", "value_json"}),
    ):
        assert columns <= set(model.__table__.c.keys()), f"hpsearch writes {model.__name__}.__table__'s {sorted(columns)}"
    study = optuna.create_study(study_name=study_name, storage=storage, directions=["minimize", "maximize"])
    ours, theirs = study.ask(), study.ask()
    epoch_row = sa.insert(seam.TRIAL_SYSTEM_ATTRIBUTES)  # any statement: write_with_report runs it with the report
    for n, (step, value) in enumerate(((1, float("nan")), (2, float("inf")), (2, 0.5), (3, float("-inf")))):
        storage.write_with_report(epoch_row, [{"trial_id": trial_id(ours), "key": f"row{n}", "value_json": "1"}], trial_id(ours), step, value)
        optuna.storages.RDBStorage.set_trial_intermediate_value(storage, trial_id(theirs), step, value)
    attrs = {"k": [1, 2], "s": "x"}
    storage.set_trial_user_attrs(trial_id(ours), attrs)
    for key, value in attrs.items():
        optuna.storages.RDBStorage.set_trial_user_attr(storage, trial_id(theirs), key, value)
    assert storage.set_trial_state_values(trial_id(ours), TrialState.COMPLETE, [float("inf"), 0.25])
    assert optuna.storages.RDBStorage.set_trial_state_values(storage, trial_id(theirs), TrialState.COMPLETE, [float("inf"), 0.25])

    def stored(table: sa.TableClause, *columns: str) -> dict[int, list[tuple]]:
        rows = _rows(storage, table, "trial_id", *columns)
        return {tid: sorted((row[1:] for row in rows if row[0] == tid), key=repr) for tid in (trial_id(ours), trial_id(theirs))}

    for table, columns in (
        (seam.TRIAL_VALUES, ("objective", "value", "value_type")),
        (seam.TRIAL_INTERMEDIATE_VALUES, ("step", "intermediate_value", "intermediate_value_type")),
        (seam.TRIAL_USER_ATTRIBUTES, ("key", "value_json")),
        (seam.TRIALS, ("state",)),
    ):
        rows = stored(table, *columns)
        assert rows[trial_id(ours)] == rows[trial_id(theirs)], f"{table.name}: hpsearch wrote {rows[trial_id(ours)]}, Optuna {rows[trial_id(theirs)]}"
    ended = {t.number: t for t in study.get_trials()}
    assert all(t.datetime_complete is not None and t.datetime_complete >= t.datetime_start for t in ended.values())
    assert abs(ended[0].datetime_complete - ended[1].datetime_complete) < timedelta(seconds=5), "both in local time"

    for write in (
        lambda: storage.set_trial_state_values(trial_id(ours), TrialState.FAIL),
        lambda: storage.write_with_report(epoch_row, [{"trial_id": trial_id(ours), "key": "late", "value_json": "1"}], trial_id(ours), 4, 0.1),
        lambda: storage.set_trial_user_attrs(trial_id(ours), {"late": 1}),
    ):
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            write()
    for write in (
        lambda: storage.set_trial_state_values(NO_SUCH_TRIAL, TrialState.FAIL),
        lambda: storage.write_with_report(epoch_row, [], NO_SUCH_TRIAL, 1, 0.1),
        lambda: storage.set_trial_user_attrs(NO_SUCH_TRIAL, {"k": 1}),
    ):
        with pytest.raises(KeyError):  # what Optuna raises for an unknown trial
            write()
    assert "late" not in str(_rows(storage, seam.TRIAL_SYSTEM_ATTRIBUTES, "key")), "a refused report takes its row with it"


# --- 5. Optuna's table layout and its encodings ----------------------------------------------------


def test_optuna_tables_have_every_column_hpsearch_names(storage_url: str) -> None:
    # On SQLite a fresh file: Optuna creates its tables when the storage opens.
    storage = optuna.storages.RDBStorage(storage_url)
    try:
        inspector = sa.inspect(storage.engine)
        for table in seam.OPTUNA_TABLES:
            assert inspector.has_table(table.name), f"hpsearch reads Optuna's table {table.name!r} ({SEAM})"
            present = {column["name"] for column in inspector.get_columns(table.name)}
            missing = sorted(set(table.c.keys()) - present)
            assert not missing, (
                f"hpsearch reads {table.name}.{missing} ({SEAM}); Optuna {optuna.__version__} has {sorted(present)}"
            )
    finally:
        storage.engine.dispose()


def _rows(storage: QueuedRDBStorage, table: sa.TableClause, *columns: str, **where: object) -> list[tuple]:
    query = sa.select(*(table.c[c] for c in columns)).where(*(table.c[k] == v for k, v in where.items()))
    with storage.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


def test_optuna_stores_states_values_attributes_and_datetimes_as_hpsearch_reads_them(
    storage: QueuedRDBStorage, study_name: str, east_of_utc
) -> None:
    study, done = _trials_of_every_kind(storage, study_name)
    study.set_metric_names(["loss", "acc"])
    study.set_user_attr("hpsearch.metric", "loss")
    study_id = storage.get_study_id_from_name(study_name)
    frozen = study.get_trials()

    states = [state for (state,) in _rows(storage, seam.TRIALS, "state", study_id=study_id)]
    assert sorted(map(str, states)) == sorted(t.state.name for t in frozen), (
        "export and study_summaries read trials.state as the TrialState name (seam.state_is)"
    )
    with storage.engine.connect() as connection:
        complete = connection.execute(
            sa.select(sa.func.count())
            .select_from(seam.TRIALS)
            .where(seam.TRIALS.c.study_id == study_id, seam.state_is(seam.TRIALS.c.state, TrialState.COMPLETE))
        ).scalar()
    assert complete == 2, "seam.state_is must compare trials.state with a state name on this database"

    values = {
        (objective, str(kind)): value
        for objective, value, kind in _rows(
            storage, seam.TRIAL_VALUES, "objective", "value", "value_type", trial_id=trial_id(done)
        )
    }
    assert values == {(0, seam.ValueType.INF_POS): None, (1, seam.ValueType.INF_NEG): None}, (
        f"a non-finite value is a NULL number and its type ({seam.NONFINITE_VALUES}); by objective: {values}"
    )
    other = _rows(storage, seam.TRIAL_VALUES, "objective", "value", "value_type", trial_id=trial_id(frozen[1]))
    assert sorted((o, v, str(k)) for o, v, k in other) == [(0, 0.25, "FINITE"), (1, 0.75, "FINITE")]

    steps = {
        step: (value, str(kind))
        for step, value, kind in _rows(
            storage,
            seam.TRIAL_INTERMEDIATE_VALUES,
            "step",
            "intermediate_value",
            "intermediate_value_type",
            trial_id=trial_id(done),
        )
    }
    assert steps == {1: (None, seam.ValueType.NAN), 2: (None, seam.ValueType.INF_POS)}, (
        f"an intermediate NaN or infinity is a NULL number and its type; stored: {steps}"
    )

    (attr,) = _rows(storage, seam.TRIAL_USER_ATTRIBUTES, "value_json", trial_id=trial_id(done), key="lr_history")
    assert json.loads(attr[0]) == [0.1, 0.01], "trial attributes are JSON in value_json"
    (names,) = _rows(storage, seam.STUDY_SYSTEM_ATTRIBUTES, "value_json", study_id=study_id, key=seam.METRIC_NAMES_ATTR)
    assert json.loads(names[0]) == ["loss", "acc"], (
        f"study.set_metric_names is the study system attribute {seam.METRIC_NAMES_ATTR!r} (JSON list)"
    )
    (metric,) = _rows(storage, seam.STUDY_USER_ATTRIBUTES, "value_json", study_id=study_id, key="hpsearch.metric")
    assert json.loads(metric[0]) == "loss", "study user attributes are JSON in value_json"
    directions = _rows(storage, seam.STUDY_DIRECTIONS, "objective", "direction", study_id=study_id)
    assert sorted((o, str(d)) for o, d in directions) == [(0, "MINIMIZE"), (1, "MAXIMIZE")], (
        "study_directions holds the StudyDirection name by objective"
    )

    starts = dict(_rows(storage, seam.TRIALS, "trial_id", "datetime_start", study_id=study_id))
    for trial in frozen:
        stored = starts[trial_id(trial)]
        if trial.datetime_start is None:
            assert stored is None
            continue
        stored = datetime.fromisoformat(stored) if isinstance(stored, str) else stored
        assert math.isclose((trial.datetime_start - stored).total_seconds(), 5.5 * 3600, abs_tol=1), (
            "Optuna stores trial datetimes as naive UTC (export converts them to local time, and the take "
            f"writes seam.stored_now()); stored {stored}, FrozenTrial shows {trial.datetime_start} at UTC+5:30"
        )


# --- Retried writes: each is applied once, even when its first attempt committed ----------------


def _answer_lost_once(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[str]:
    """Make ``owner.name`` commit its write and then fail once with a transient error, as when the
    connection drops between the server's COMMIT and its answer reaching the worker."""
    original = getattr(owner, name)
    lost: list[str] = []

    def committed_then_lost(*args, **kwargs):
        result = original(*args, **kwargs)
        if not lost:
            lost.append(name)
            raise sa.exc.OperationalError("COMMIT", None, Exception("server closed the connection unexpectedly"))
        return result

    monkeypatch.setattr(owner, name, committed_then_lost)
    return lost


def test_a_queued_trial_whose_creation_answer_was_lost_is_created_once(
    storage: QueuedRDBStorage, study_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = optuna.create_study(study_name=study_name, storage=storage)
    lost = _answer_lost_once(monkeypatch, optuna.storages.RDBStorage, "_create_new_trial")
    study.enqueue_trial({"x": 0.5})
    assert lost and len(study.get_trials()) == 1


def test_a_take_whose_answer_was_lost_still_belongs_to_its_worker(
    storage: QueuedRDBStorage, study_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = optuna.create_study(study_name=study_name, storage=storage)
    study.enqueue_trial({"x": 0.5})
    lost = _answer_lost_once(monkeypatch, QueuedRDBStorage, "_take")
    trial = study.ask({"x": X})
    assert lost and trial.number == 0 and len(study.get_trials()) == 1
    assert study.get_trials()[0].state == TrialState.RUNNING


def test_a_take_of_the_first_waiting_trial_whose_answer_was_lost_takes_one(
    storage: QueuedRDBStorage, study_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = seam.taking_queued_trials_at_once(optuna.create_study(study_name=study_name, storage=storage))
    study.enqueue_trial({"x": 0.5})
    study.enqueue_trial({"x": 0.6})
    lost = _answer_lost_once(monkeypatch, QueuedRDBStorage, "_take_first")
    trial = study.ask()
    assert lost and trial.number == 0
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING, TrialState.WAITING]


def test_a_final_state_whose_answer_was_lost_is_not_refused_on_retry(
    storage: QueuedRDBStorage, study_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = optuna.create_study(study_name=study_name, storage=storage)
    trial = study.ask({"x": X})
    lost = _answer_lost_once(monkeypatch, QueuedRDBStorage, "_finish")
    study.tell(trial, 0.25)
    assert lost and study.get_trials()[0].state == TrialState.COMPLETE and study.get_trials()[0].value == 0.25


def test_the_take_writes_the_first_heartbeat_so_a_trial_of_a_worker_killed_at_once_goes_stale(
    sqlite_url: str, study_name: str
) -> None:
    storage = StudyDatabase.open_for_search(sqlite_url, heartbeat_interval=1, grace_period=1).storage
    try:
        study = optuna.create_study(study_name=study_name, storage=storage)
        study.enqueue_trial({"x": 0.5})
        taken = study.ask({"x": X})  # no heartbeat thread runs: the worker "died" right after the take
        assert storage.heartbeat_age(trial_id(taken)) < 1
        time.sleep(2.5)
        assert storage._get_stale_trial_ids(storage.get_study_id_from_name(study_name)) == [trial_id(taken)]
    finally:
        storage.engine.dispose()


def test_stale_trials_are_found_as_optuna_finds_them(storage_url: str, study_name: str) -> None:
    storage = StudyDatabase.open_for_search(storage_url, heartbeat_interval=1, grace_period=60).storage
    try:
        study = optuna.create_study(study_name=study_name, storage=storage)
        for _ in range(3):
            study.enqueue_trial({"x": 0.5})
        stale, _fresh, ended = (study.ask({"x": X}) for _ in range(3))  # each take stores a heartbeat
        study.tell(ended, 1.0)
        study.ask()  # RUNNING without a heartbeat row: never stale
        # A day back: whatever the server's time zone, far past the grace period.
        with storage.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                day_ago = sa.func.now() - sa.text("INTERVAL '1 day'")
            else:
                day_ago = sa.func.datetime("now", "-1 day")
            beats = seam.TRIAL_HEARTBEATS
            connection.execute(
                sa.update(beats).where(beats.c.trial_id.in_([trial_id(stale), trial_id(ended)])).values(heartbeat=day_ago)
            )
        study_id = storage.get_study_id_from_name(study_name)
        assert storage._get_stale_trial_ids(study_id) == [trial_id(stale)], (
            "only the RUNNING trial whose heartbeat is older than the grace period is stale"
        )
        assert storage._get_stale_trial_ids(study_id) == optuna.storages.RDBStorage._get_stale_trial_ids(storage, study_id)
    finally:
        storage.engine.dispose()


def test_heartbeat_storage_is_what_optuna_beats_for(sqlite_url: str) -> None:
    # The storage proxy's client derives from it: Optuna must run a heartbeat thread, and fail
    # stale trials, for any instance with an interval, and ask it for exactly these methods.
    from optuna.storages._heartbeat import is_heartbeat_enabled

    (base,) = seam.HeartbeatStorage.__bases__  # Optuna's private BaseHeartbeat
    assert base.__abstractmethods__ == {
        "record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback"
    }
    # The private one is the seam's; the proxy's client implements the public ones.
    assert seam.HeartbeatStorage.__abstractmethods__ == {
        "record_heartbeat", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback"
    }
    with_beat = QueuedRDBStorage(sqlite_url, heartbeat_interval=1)
    assert isinstance(with_beat, base) and is_heartbeat_enabled(with_beat)
    with_beat.engine.dispose()


def test_gp_sampler_reads_the_trials_it_learns_from_through_get_trials(sqlite_url: str, study_name: str) -> None:
    # GPSampler fits complete trials read by Study._get_trials; PrunedAsComplete answers that call.
    source = inspect.getsource(optuna.samplers.GPSampler.sample_relative)
    assert "study._get_trials(" in source and "TrialState.COMPLETE" in source
    study = optuna.create_study(storage=sqlite_url, study_name=study_name)
    dist = {"x": FloatDistribution(0.0, 1.0)}
    study.add_trial(optuna.trial.create_trial(params={"x": 0.1}, distributions=dist, value=0.5))
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 0.2}, distributions=dist, state=TrialState.PRUNED, intermediate_values={1: 0.9, 4: 0.7}
        )
    )
    study.add_trial(optuna.trial.create_trial(params={"x": 0.3}, distributions=dist, state=TrialState.PRUNED))
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 0.4}, distributions=dist, state=TrialState.PRUNED, intermediate_values={2: math.nan}
        )
    )
    view = seam.PrunedAsComplete(study)
    shown = view._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING), use_cache=False)
    assert [(t.params["x"], t.state, t.values) for t in shown] == [
        (0.1, TrialState.COMPLETE, [0.5]),
        (0.2, TrialState.COMPLETE, [0.7]),  # its last report, not its first
    ]
    assert [t.state for t in study.get_trials()][1] == TrialState.PRUNED  # the study's own trials are untouched
    assert view.get_trials(states=(TrialState.PRUNED,)) == []
    assert view.directions == study.directions



def test_a_multi_objective_studys_pruned_trials_show_at_the_values_the_pareto_pruner_stored() -> None:
    # Optuna keeps no values for them; a pruned trial without stored ones (a budget cut it) stays out.
    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"x": FloatDistribution(0.0, 1.0)}
    study.add_trial(optuna.trial.create_trial(params={"x": 0.1}, distributions=dist, values=[0.5, 10.0]))
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 0.2}, distributions=dist, state=TrialState.PRUNED, user_attrs={"pruned_values": [0.3, 52.0]}
        )
    )
    study.add_trial(optuna.trial.create_trial(params={"x": 0.3}, distributions=dist, state=TrialState.PRUNED))
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 0.4}, distributions=dist, state=TrialState.PRUNED, user_attrs={"pruned_values": [math.nan, 1.0]}
        )
    )
    shown = seam.PrunedAsComplete(study)._get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert [(t.params["x"], t.state, t.values) for t in shown] == [
        (0.1, TrialState.COMPLETE, [0.5, 10.0]),
        (0.2, TrialState.COMPLETE, [0.3, 52.0]),
    ]

# --- Fewer transactions per trial: a batch of queued trials, an epoch's row with its report, the closing beat ---


def test_a_batch_of_queued_trials_is_what_enqueue_trial_makes_of_each_point(storage_url: str, study_name: str) -> None:
    database = StudyDatabase.open_for_search(storage_url)
    try:
        batched = optuna.create_study(study_name=study_name, storage=database.storage)
        each = optuna.create_study(study_name=study_name + "-each", storage=database.storage)
        points = [{"x": 0.25}, {}, {"x": 0.75}]
        for study in (batched, each):  # interleaved: a trial's number counts its own study's trials only
            study.enqueue_trial({"x": 0.5})
        seam.enqueue_points(batched, points)
        for point in points:
            each.enqueue_trial(point)

        def shown(study: optuna.Study) -> list[tuple]:
            return [(t.number, t.state, t.system_attrs["fixed_params"], t.params) for t in study.get_trials()]

        assert shown(batched) == shown(each)
        database.storage.queue_only = True
        taken = [batched.ask({"x": X}) for _ in range(4)]
        assert [t.number for t in taken] == [0, 1, 2, 3]
        assert [taken[i].params["x"] for i in (0, 1, 3)] == [0.5, 0.25, 0.75], "the queue hands out each fixed point"
    finally:
        database.close()


def test_a_batch_whose_answer_was_lost_is_queued_once(
    storage: QueuedRDBStorage, study_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = optuna.create_study(study_name=study_name, storage=storage)
    lost = _answer_lost_once(monkeypatch, QueuedRDBStorage, "_insert_waiting_trials")
    seam.enqueue_points(study, [{}, {}, {}])
    assert lost and [t.number for t in study.get_trials()] == [0, 1, 2]


def test_an_epoch_row_and_its_report_commit_together_and_not_on_an_ended_trial(storage_url: str, study_name: str) -> None:
    database = StudyDatabase.open_for_search(storage_url)
    try:
        study = optuna.create_study(study_name=study_name, storage=database.storage)
        trial = study.ask()
        database.epoch_table.write(trial_id(trial), {"epoch": 1, "val_loss": 0.5}, report=(1, 0.5))
        assert study.trials[0].intermediate_values == {1: 0.5}
        study.tell(trial, 0.5)
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            database.epoch_table.write(trial_id(trial), {"epoch": 2, "val_loss": 0.4}, report=(2, 0.4))
        assert list(database.epoch_table.frame(study_name)["epoch"]) == [1], "a refused report takes its row with it"
        assert study.trials[0].intermediate_values == {1: 0.5}
    finally:
        database.close()


def test_the_closing_attributes_store_a_heartbeat_and_are_refused_on_an_ended_trial(sqlite_url: str, study_name: str) -> None:
    storage = StudyDatabase.open_for_search(sqlite_url, heartbeat_interval=1, grace_period=2).storage
    try:
        study = optuna.create_study(study_name=study_name, storage=storage)
        study.enqueue_trial({})
        taken = study.ask()  # no heartbeat thread runs: only the take and the closing write beat
        time.sleep(1.5)
        storage.set_trial_user_attrs(trial_id(taken), {"k": 1}, beat=True)
        time.sleep(1.5)  # 3 s after the take, past the grace period; 1.5 s after the closing write
        assert storage._get_stale_trial_ids(storage.get_study_id_from_name(study_name)) == []
        study.tell(taken, state=TrialState.FAIL)
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_user_attrs(trial_id(taken), {"k": 2}, beat=True)
        assert study.trials[0].user_attrs == {"k": 1}
    finally:
        storage.engine.dispose()


def test_whether_a_trial_waits_is_asked_of_the_storage_in_one_statement(storage: QueuedRDBStorage, study_name: str) -> None:
    study = seam.taking_queued_trials_at_once(optuna.create_study(study_name=study_name, storage=storage))
    statements: list[str] = []
    sa.event.listen(storage.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    assert seam.has_waiting_trial(study) is False and len(statements) == 1
    seam.enqueue_points(study, [{}])
    assert seam.has_waiting_trial(study) is True
    study.ask()
    assert seam.has_waiting_trial(study) is False


def test_the_heartbeat_thread_does_not_beat_again_right_after_the_take(sqlite_url: str, study_name: str) -> None:
    storage = StudyDatabase.open_for_search(sqlite_url, heartbeat_interval=2, grace_period=4).storage
    try:
        study = optuna.create_study(study_name=study_name, storage=storage)
        study.enqueue_trial({})
        taken = study.ask()
        statements: list[str] = []
        sa.event.listen(storage.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        storage.record_heartbeat(trial_id(taken))  # what Optuna's thread does as it starts
        assert statements == [], "the take stored this trial's heartbeat a moment ago"
        time.sleep(1.1)  # past half an interval
        storage.record_heartbeat(trial_id(taken))
        assert any("trial_heartbeats" in statement for statement in statements)
    finally:
        storage.engine.dispose()


def test_a_numbered_qmc_sampler_draws_the_point_its_trial_number_names():
    # 10 of the module docstring: QMCSampler takes its point's index from _find_sample_id.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    for _ in range(3):
        study.ask()
    trials = study.get_trials(deepcopy=False)
    sampler = seam.NumberedQMCSampler(qmc_type="sobol", scramble=True, seed=1, first_number=1)
    drawn = {n: sampler.sample_relative(study, trials[n], {"x": trials[0].distributions["x"]})["x"] for n in (3, 1, 2)}
    counted = optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=1)  # Optuna's counter, in order
    assert [drawn[n] for n in (1, 2, 3)] == [counted.sample_relative(study, trials[n], {"x": trials[0].distributions["x"]})["x"] for n in (1, 2, 3)]


@pytest.mark.parametrize("name", ["gp", "tpe", "random"])
def test_reseeding_a_sampler_seeds_every_random_state_it_draws_from(name):
    # 12 of the module docstring: the samplers' LazyRandomState, held by them and their inner samplers.
    from hpsearch.search.samplers import make_sampler

    def draws(sampler, seed):
        study = optuna.create_study(sampler=sampler)
        for _ in range(4):  # the first trial at random, the next ones from the design or the model
            trial = study.ask()
            seam.reseed_sampler(sampler, seed + trial.number)
            study.tell(trial, trial.suggest_float("x", 0, 1) + trial.suggest_int("n", 1, 1000) / 1000)
        return [t.params for t in study.trials]

    assert seam.reseed_sampler(make_sampler(name, 0), 1) >= 1
    assert draws(make_sampler(name, None), 7) == draws(make_sampler(name, None), 7)  # seeded from the OS, then alike
    assert draws(make_sampler(name, 0), 7)[0] != draws(make_sampler(name, 0), 8)[0]


def test_a_trial_is_judged_stale_by_the_longer_grace_its_worker_declared(sqlite_url: str, study_name: str) -> None:
    """A worker with --grace-period 120 had its trial failed after 30 s by a peer (or a proxy) with the default."""
    patient = StudyDatabase.open_for_search(sqlite_url, heartbeat_interval=1, grace_period=120).storage
    hasty = StudyDatabase.open_for_search(sqlite_url, heartbeat_interval=1, grace_period=1).storage
    try:
        study = optuna.create_study(study_name=study_name, storage=patient)
        study.enqueue_trial({"x": 0.5})
        taken = study.ask({"x": X})
        assert study.trials[0].system_attrs[seam.GRACE_ATTR] == 120  # declared with the take
        study_id = patient.get_study_id_from_name(study_name)
        with patient.engine.begin() as connection:
            ago = sa.func.datetime("now", "-60 seconds")
            connection.execute(sa.update(seam.TRIAL_HEARTBEATS).where(seam.TRIAL_HEARTBEATS.c.trial_id == trial_id(taken))
                               .values(heartbeat=ago))
        assert hasty._get_stale_trial_ids(study_id) == []  # a minute is within the 120 s its worker declared
        with patient.engine.begin() as connection:
            ago = sa.func.datetime("now", "-1 day")
            connection.execute(sa.update(seam.TRIAL_HEARTBEATS).where(seam.TRIAL_HEARTBEATS.c.trial_id == trial_id(taken))
                               .values(heartbeat=ago))
        assert hasty._get_stale_trial_ids(study_id) == [trial_id(taken)]
    finally:
        patient.engine.dispose()
        hasty.engine.dispose()
