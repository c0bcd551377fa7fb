"""The per-epoch metrics table ``hpsearch_epoch_metrics``, kept in the study's own database.

One row per (Optuna ``trial_id``, epoch). The measurements every task has are real columns;
the task's own metrics (``val_acc`` for classification, ``val_mse``/``val_mae`` for regression,
...) go into one JSON text column, ``task_metrics``, so a new task never needs ``ALTER TABLE``.
Readers spread that column back into one column per metric.

Non-finite floats: the fixed columns keep NaN and infinity on PostgreSQL; SQLite stores NaN as
NULL, which reads back as NaN. ``task_metrics`` is written by Python's ``json`` and may hold the
tokens ``NaN``/``Infinity``, which Python reads back but strict JSON parsers reject.

The table has no foreign key to Optuna's ``trials``: one would make ``optuna.delete_study``
fail on PostgreSQL. Delete a study with :func:`delete_study`, which removes its rows first.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import CreateTable

from hpsearch.storage.optuna_seam import STUDIES, TRIALS

if TYPE_CHECKING:
    import pandas as pd

    from hpsearch.storage.database import StudyDatabase

TABLE_NAME = "hpsearch_epoch_metrics"
KEY_COLUMNS = ("trial_id", "epoch")
FLOAT_COLUMNS = (
    "lr",
    "train_loss",
    "val_loss",
    "grad_norm_mean",
    "grad_norm_max",
    "epoch_seconds",
    "samples_per_second",
)
INT_COLUMNS = ("nonfinite_steps", "clipped_steps", "peak_memory_bytes")
FIXED_COLUMNS = FLOAT_COLUMNS + INT_COLUMNS
TASK_METRICS_COLUMN = "task_metrics"
# Column order of frames: the losses first (as on the epoch line), then the task's metrics,
# then the diagnostics.
LEADING_COLUMNS = ("lr", "train_loss", "val_loss")
TRAILING_COLUMNS = tuple(c for c in FIXED_COLUMNS if c not in LEADING_COLUMNS)
# Diagnostics kept in the JSON column (so older tables need no ALTER TABLE), shown after the fixed ones.
JSON_DIAGNOSTICS = ("mfu",)
# Names that frames use for their own columns; a task metric may not take one.
RESERVED_NAMES = frozenset({"trial_id", "number", "state", "epoch", "intermediate_value", TASK_METRICS_COLUMN})
# Serialises CREATE TABLE between processes on PostgreSQL (an arbitrary 63-bit constant).
_PG_CREATE_LOCK = 0x6870_7365_6172_6368 >> 1

metadata = sa.MetaData()
epoch_metrics = sa.Table(
    TABLE_NAME,
    metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("epoch", sa.Integer, primary_key=True, autoincrement=False),
    *(sa.Column(name, sa.Double) for name in FLOAT_COLUMNS),
    sa.Column("nonfinite_steps", sa.Integer),
    sa.Column("clipped_steps", sa.Integer),
    sa.Column("peak_memory_bytes", sa.BigInteger),
    sa.Column(TASK_METRICS_COLUMN, sa.Text, nullable=False),
)

def ensure_table(engine: Engine) -> None:
    """Create ``hpsearch_epoch_metrics`` unless it exists; safe when processes race to do it."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # CREATE TABLE IF NOT EXISTS alone can still fail on PostgreSQL when two sessions
            # run it at once (a unique violation in pg_type); the lock makes the second wait
            # for the first to commit, after which IF NOT EXISTS sees the table.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_CREATE_LOCK})
        # On SQLite the IF NOT EXISTS check runs under the database write lock, so it is atomic.
        connection.execute(CreateTable(epoch_metrics, if_not_exists=True))


def has_table(connection: Connection | Engine) -> bool:
    """Whether the database already holds ``hpsearch_epoch_metrics`` (readers create nothing)."""
    return sa.inspect(connection).has_table(TABLE_NAME)


def to_db_row(trial_id: int, row: Mapping[str, Any]) -> dict[str, Any]:
    """The table row for ``row`` (an ``EpochRecord.as_row()``): fixed columns + task-metrics JSON."""
    if "epoch" not in row:
        raise ValueError(f"an epoch row needs an 'epoch' key; got {sorted(row)}")
    values: dict[str, Any] = {"trial_id": int(trial_id), "epoch": int(row["epoch"])}
    for name in FLOAT_COLUMNS:
        value = row.get(name)
        values[name] = None if value is None else float(value)
    for name in INT_COLUMNS:
        value = row.get(name)
        values[name] = None if value is None else int(value)
    metrics: dict[str, Any] = {}
    for name, value in row.items():
        if name in values or name in FIXED_COLUMNS:
            continue
        if name in RESERVED_NAMES:
            raise ValueError(f"a task metric may not be called {name!r}; that name is a column of the epoch table")
        # float() turns numpy and torch scalars into something json can write.
        metrics[name] = value if value is None or isinstance(value, (str, bool)) else float(value)
    values[TASK_METRICS_COLUMN] = json.dumps(metrics, sort_keys=True)
    return values


@functools.cache
def _upsert(dialect_name: str) -> sa.Executable:
    """The row upsert, executed with the rows as parameters: one statement per dialect, compiled once and cached."""
    # A resumed trial may run an epoch again; its newer measurement replaces the old row.
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    statement = insert(epoch_metrics)
    updated = {name: statement.excluded[name] for name in (*FIXED_COLUMNS, TASK_METRICS_COLUMN)}
    return statement.on_conflict_do_update(index_elements=list(KEY_COLUMNS), set_=updated)


def spread_task_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """Replace the ``task_metrics`` JSON column by one float column per metric (sorted by name)."""
    import pandas as pd  # here: a worker writes rows and never reads a frame, and pandas costs it 0.2 s

    texts = frame.pop(TASK_METRICS_COLUMN).tolist()
    if not texts:
        return frame
    # One json.loads over all rows: the per-call overhead dominates for small objects.
    spread = pd.DataFrame(json.loads("[" + ",".join(texts) + "]"), index=frame.index)
    spread = spread.reindex(columns=sorted(spread.columns))
    position = frame.columns.get_loc("val_loss") + 1 if "val_loss" in frame.columns else len(frame.columns)
    return pd.concat([frame.iloc[:, :position], spread, frame.iloc[:, position:]], axis=1)


def fetch_rows(connection: Connection, sql: str | sa.Select) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``sql`` (which takes no parameters), from the raw DBAPI cursor.

    Export reads hundreds of thousands of rows; SQLAlchemy's row objects would cost more than
    the query itself. A ``Select`` is compiled with its bound values written into the SQL text:
    give it only integers read from the database.
    """
    if not isinstance(sql, str):
        sql = str(sql.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql)
        names = [column[0] for column in cursor.description]
        return names, cursor.fetchall()
    finally:
        cursor.close()


RAW_NAMES = ("trial_id", "number", "epoch", *FIXED_COLUMNS, TASK_METRICS_COLUMN)


def _raw_study_rows(connection: Connection, study_name: str, through_epoch: int | None = None) -> list[tuple[Any, ...]]:
    """The raw rows (``RAW_NAMES``) of one study, up to ``through_epoch`` if given, ordered by number and epoch."""
    study_id = None
    if sa.inspect(connection).has_table(TRIALS.name):  # else there is no study, hence no rows
        study_id = connection.execute(sa.select(STUDIES.c.study_id).where(STUDIES.c.study_name == study_name)).scalar()
    if study_id is None:
        return []
    e, t = epoch_metrics.alias("e"), TRIALS.alias("t")
    query = (
        sa.select(e.c.trial_id, t.c.number, e.c.epoch, *(e.c[name] for name in RAW_NAMES[3:]))
        .join_from(e, t, t.c.trial_id == e.c.trial_id)
        # study_id is an integer read from the database, so writing it into the SQL is safe.
        .where(t.c.study_id == int(study_id))
        .order_by(t.c.number, e.c.epoch)
    )
    if through_epoch is not None:
        query = query.where(e.c.epoch <= int(through_epoch))
    return fetch_rows(connection, query)[1]


def read_study_rows(connection: Connection, study_name: str) -> pd.DataFrame:
    """The raw rows of one study with the trial ``number`` added, ordered by number and epoch."""
    import pandas as pd

    frame = pd.DataFrame.from_records(_raw_study_rows(connection, study_name), columns=list(RAW_NAMES))
    for name in ("trial_id", "number", "epoch"):
        frame[name] = frame[name].astype("int64")
    # NULL is how SQLite keeps NaN; an all-NULL column would otherwise come back as object.
    for name in FLOAT_COLUMNS:
        frame[name] = frame[name].astype("float64")
    frame[TASK_METRICS_COLUMN] = frame[TASK_METRICS_COLUMN].astype(object)
    return frame


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Column order of every epoch frame: keys, losses, task metrics, diagnostics."""
    frame = spread_task_metrics(frame)
    keys = [c for c in ("trial_id", "number", "epoch") if c in frame.columns]
    metrics = [c for c in frame.columns if c not in keys and c not in FIXED_COLUMNS and c not in JSON_DIAGNOSTICS]
    diagnostics = [c for c in JSON_DIAGNOSTICS if c in frame.columns]
    return frame[[*keys, *LEADING_COLUMNS, *metrics, *TRAILING_COLUMNS, *diagnostics]].reset_index(drop=True)


class EpochMetricsTable:
    """Writes and reads ``hpsearch_epoch_metrics`` in a study database.

    Give it an open ``StudyDatabase`` (its engine and retry are shared, and it stays open when
    the table is closed), or a URL, which it opens for search and closes with the table. The
    table is created on the first construction against a database opened for search. Each
    ``write`` is one transaction, so a crash loses at most the epoch being written.
    """

    def __init__(self, database: str | StudyDatabase) -> None:
        from hpsearch.storage.database import StudyDatabase

        self._owned = isinstance(database, str)
        self.database = StudyDatabase.open_for_search(database) if isinstance(database, str) else database
        self.url = self.database.url
        self._engine = self.database.engine
        # One outage clock for all of a worker's writes: the storage's.
        self.retry = self.database.retry
        if self.database.writable:
            ensure_table(self._engine)

    def write(self, trial_id: int, row: Mapping[str, Any], report: tuple[int, float] | None = None) -> None:
        """Store one epoch of trial ``trial_id`` (``optuna_seam.trial_id(trial)``); replaces a rewrite.

        With ``report`` (step, value), the trial's report of that step is stored in the same
        transaction (``QueuedRDBStorage.write_with_report``). Transient database errors are
        retried (``self.retry``); the upsert makes a retry exact.
        """
        self.write_stored(to_db_row(trial_id, row), report)

    def write_stored(self, values: Mapping[str, Any], report: tuple[int, float] | None = None) -> None:
        """``write`` of a row already in the table's form (``to_db_row``): what a worker behind the storage proxy sends."""
        if report is None:
            self.retry.call(self._upsert_rows, [dict(values)])
            return
        statement = _upsert(self._engine.dialect.name)
        self.retry.call(self.database.storage.write_with_report, statement, [dict(values)], values["trial_id"], *report)

    def _upsert_rows(self, values: list[dict[str, Any]]) -> None:
        with self._engine.begin() as connection:
            connection.execute(_upsert(connection.dialect.name), values)

    def write_many(self, rows: Iterable[tuple[int, Mapping[str, Any]]]) -> int:
        """Store ``(trial_id, row)`` pairs in one transaction (imports and benchmarks); returns the count."""
        values = [to_db_row(trial_id, row) for trial_id, row in rows]
        if not values:
            return 0
        with self._engine.begin() as connection:
            connection.execute(_upsert(connection.dialect.name), values)
        return len(values)

    def frame(self, study_name: str | Any) -> pd.DataFrame:
        """Every row of study ``study_name`` (or an ``optuna.Study``'s): ``trial_id``, ``number``, ``epoch``, then the metrics.

        Task metrics get one column each; a trial whose task lacks a metric has NaN there.
        A study without rows (or unknown here) gives an empty frame with the fixed columns.
        """
        name = getattr(study_name, "study_name", study_name)  # a Study, as a user holds one
        with self._engine.connect() as connection:
            return _tidy(read_study_rows(connection, name))

    def rows_by_trial(self, study_name: str, through_epoch: int) -> dict[int, list[dict[str, Any]]]:
        """Study ``study_name``'s rows up to ``through_epoch``, as ``EpochRecord.as_row()`` dicts, by trial number.

        Without pandas: a worker's pruner reads these at its rungs. Transient errors are retried.
        """

        def read() -> list[tuple[Any, ...]]:
            with self._engine.connect() as connection:
                return _raw_study_rows(connection, study_name, through_epoch)

        by_trial: dict[int, list[dict[str, Any]]] = {}
        for raw in self.retry.call(read):
            row = dict(zip(RAW_NAMES[2:-1], raw[2:-1]))
            row.update(json.loads(raw[-1]))
            by_trial.setdefault(raw[1], []).append(row)
        return by_trial

    def delete_trials(self, trial_ids: Iterable[int]) -> int:
        """Delete the rows of the given trials; returns how many rows went."""
        ids = [int(i) for i in trial_ids]
        if not ids:
            return 0
        with self._engine.begin() as connection:
            result = connection.execute(sa.delete(epoch_metrics).where(epoch_metrics.c.trial_id.in_(ids)))
        return result.rowcount

    def delete_study_rows(self, study_name: str) -> int:
        """Delete the rows of every trial of ``study_name``; call it before deleting the study."""
        trial_ids = (
            sa.select(TRIALS.c.trial_id)
            .join(STUDIES, STUDIES.c.study_id == TRIALS.c.study_id)
            .where(STUDIES.c.study_name == study_name)
        )
        with self._engine.begin() as connection:
            if not sa.inspect(connection).has_table(TRIALS.name):
                return 0  # no Optuna tables yet, so no study and no rows of one
            result = connection.execute(sa.delete(epoch_metrics).where(epoch_metrics.c.trial_id.in_(trial_ids)))
        return result.rowcount

    def delete_orphans(self) -> int:
        """Delete rows whose trial no longer exists (a study deleted by Optuna alone).

        Worth running after such a deletion: SQLite may hand a deleted trial's id to a new trial.
        """
        with self._engine.begin() as connection:
            result = connection.execute(
                sa.delete(epoch_metrics).where(epoch_metrics.c.trial_id.not_in(sa.select(TRIALS.c.trial_id)))
            )
        return result.rowcount

    def close(self) -> None:
        """Close the database if the table opened it."""
        if self._owned:
            self.database.close()

    def __enter__(self) -> EpochMetricsTable:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def delete_study(url: str, study_name: str) -> None:
    """Delete a study and its epoch rows (``optuna.delete_study`` alone would orphan them)."""
    from hpsearch.storage.database import StudyDatabase

    with StudyDatabase.open_for_search(url) as database:
        database.epoch_table.delete_study_rows(study_name)
        optuna.delete_study(study_name=study_name, storage=database.storage)
