"""Studies as pandas DataFrames and as files, read straight from Optuna's tables.

``trials_frame`` gives the same columns and values as Optuna's ``study.trials_dataframe()``
(``number``, ``value`` or ``values_*``, ``datetime_start``, ``datetime_complete``, ``duration``,
``params_*``, ``user_attrs_*``, ``system_attrs_*``, ``state``) but reads the study with a handful
of set-based queries instead of building one ``FrozenTrial`` per trial, which is what makes it
fast on large studies. ``epochs_frame`` is the long table: one row per (trial, epoch) with the
reported intermediate value, every column of ``hpsearch_epoch_metrics`` and the trial's params.

Files (``export_study``) hold the same rows and columns with two changes that every format
shares: ``duration`` is in seconds (a float), and cells holding lists or dicts (``lr_history``,
``system_attrs_fixed_params``) or columns mixing value types are JSON text. JSON files are strict
JSON, which has no infinity: non-finite numbers are ``null`` there (CSV and parquet keep them).

Each reader takes a storage URL, or a ``StudyDatabase`` a caller opened once. Finding the study,
the per-study summary rows and the errors they raise (``StorageReadError``, ``UnknownStudyError``,
both ``ExportError``) live in ``storage/reading.py``, which needs no pandas, and are importable
from here too.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    json_to_distribution,
)
from sqlalchemy.engine import Connection

from hpsearch.storage import epoch_metrics as em
from hpsearch.storage.database import StudyDatabase, reading
from hpsearch.storage.optuna_seam import (
    NONFINITE_VALUES,
    TRIAL_INTERMEDIATE_VALUES,
    TRIAL_PARAMS,
    TRIAL_SYSTEM_ATTRIBUTES,
    TRIAL_USER_ATTRIBUTES,
    TRIAL_VALUES,
    TRIALS,
    ValueType,
)
from hpsearch.storage.pareto import pareto_mask
from hpsearch.storage.reading import (  # noqa: F401  ExportError and the readers, importable from here as before
    SUMMARY_COLUMNS,
    ExportError,
    StorageReadError,
    StudyInfo,
    UnknownStudyError,
    find_study,
    summary_rows,
)

EXPORT_FORMATS = ("csv", "parquet", "json")


def _read(connection: Connection, query: sa.Select) -> pd.DataFrame:
    names, rows = em.fetch_rows(connection, query)
    return pd.DataFrame.from_records(rows, columns=names)


def _per_trial(
    table: sa.TableClause, columns: list[str], study_id: int, rename: dict[str, str] | None = None
) -> sa.Select:
    """``trial_id`` and ``columns`` of ``table`` (those in ``rename`` under their new name), for one study's trials."""
    # Every child table of ``trials`` is read for one study in one query, joined on trial_id.
    x, t = table.alias("x"), TRIALS.alias("t")
    rename = rename or {}
    selected = [x.c[name].label(rename[name]) if name in rename else x.c[name] for name in columns]
    # study_id is an integer read from the database, so writing it into the SQL is safe.
    query = sa.select(x.c.trial_id, *selected).join_from(x, t, t.c.trial_id == x.c.trial_id)
    return query.where(t.c.study_id == int(study_id))


def _stored_floats(values: pd.Series, kinds: pd.Series) -> np.ndarray:
    """Optuna's (value, value_type) pairs as floats: infinities and NaN are stored as NULL + type."""
    out = np.array(values.to_numpy(dtype="float64", na_value=np.nan), copy=True)
    for kind, replacement in NONFINITE_VALUES.items():
        out[(kinds == kind).to_numpy()] = replacement
    return out


def _local_datetimes(values: list[Any]) -> list[Any]:
    """Optuna's naive-UTC datetimes as naive local time, like ``FrozenTrial.datetime_start``."""
    # SQLite hands back text, PostgreSQL datetime objects; ISO8601 parsing takes both.
    utc = pd.to_datetime(pd.Series(values, dtype=object), format="ISO8601").to_numpy(dtype="datetime64[us]")
    seconds = utc.astype("datetime64[s]").astype("int64")
    valid = ~np.isnat(utc)
    # The same offset datetime.astimezone() applies: time.localtime of the whole second.
    offsets = np.zeros(len(utc), dtype="int64")
    offsets[valid] = [time.localtime(s).tm_gmtoff for s in seconds[valid].tolist()]
    return (utc + offsets.astype("timedelta64[s]")).tolist()  # NaT becomes None


def _external(distribution: BaseDistribution, values: list[float]) -> list[Any]:
    """Optuna's internal floats as the values the objective saw: ``to_external_repr``, in bulk."""
    if isinstance(distribution, FloatDistribution):
        return values
    if isinstance(distribution, IntDistribution):
        return [int(v) for v in values]
    if isinstance(distribution, CategoricalDistribution):
        choices = distribution.choices
        return [choices[int(v)] for v in values]
    return [distribution.to_external_repr(v) for v in values]


def _param_columns(connection: Connection, study_id: int, position: dict[int, int]) -> dict[str, list[Any]]:
    """``params_<name>`` columns in external form (categorical choices decoded), sorted by name."""
    _, rows = em.fetch_rows(connection, _per_trial(TRIAL_PARAMS, ["param_name", "param_value", "distribution_json"], study_id))
    # A parameter's distribution can differ between trials (a categorical with other choices),
    # so values are decoded per (name, distribution) group.
    groups: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for trial_id, name, value, distribution_json in rows:
        positions, values = groups.setdefault((name, distribution_json), ([], []))
        positions.append(position[trial_id])
        values.append(value)
    columns: dict[str, list[Any]] = {}
    for (name, distribution_json), (positions, values) in groups.items():
        # A plain list, not a numpy array: a categorical choice must stay the object it was.
        column = columns.setdefault(name, [np.nan] * len(position))
        for at, external in zip(positions, _external(json_to_distribution(distribution_json), values)):
            column[at] = external
    return {f"params_{name}": columns[name] for name in sorted(columns)}


def _attr_columns(
    connection: Connection, study_id: int, position: dict[int, int], table: sa.TableClause, prefix: str
) -> dict[str, list[Any]]:
    """One column per attribute key of ``table`` (JSON-decoded values), sorted by key."""
    _, rows = em.fetch_rows(connection, _per_trial(table, ["key", "value_json"], study_id))
    if not rows:
        return {}
    # One json.loads over every value: the per-call overhead dominates for small values.
    decoded = json.loads("[" + ",".join(row[2] for row in rows) + "]")
    columns: dict[str, list[Any]] = {}
    for (trial_id, key, _), value in zip(rows, decoded):
        column = columns.get(key)
        if column is None:
            column = columns[key] = [np.nan] * len(position)
        column[position[trial_id]] = value
    return {f"{prefix}_{key}" if key else prefix: columns[key] for key in sorted(columns)}


def _value_columns(connection: Connection, study: StudyInfo, position: dict[int, int]) -> dict[str, list[Any]]:
    """``value`` (single objective) or ``values_<i|name>``, named as trials_dataframe names them."""
    _, rows = em.fetch_rows(connection, _per_trial(TRIAL_VALUES, ["objective", "value", "value_type"], study.study_id))
    n_objectives = len(study.directions)
    table: list[list[Any]] = [[None] * len(position) for _ in range(n_objectives)]
    for trial_id, objective, value, kind in rows:
        table[objective][position[trial_id]] = value if str(kind) == ValueType.FINITE else NONFINITE_VALUES[str(kind)]
    if n_objectives == 1:
        name = f"value_{study.metric_names[0]}" if study.metric_names else "value"
        return {name: table[0]}
    labels = study.metric_names or tuple(range(n_objectives))
    return {f"values_{label}": column for label, column in zip(labels, table)}


def _trials(connection: Connection, study_id: int) -> pd.DataFrame:
    t = TRIALS
    frame = _read(
        connection,
        sa.select(t.c.trial_id, t.c.number, t.c.state, t.c.datetime_start, t.c.datetime_complete)
        .where(t.c.study_id == int(study_id))  # an integer read from the database
        .order_by(t.c.trial_id),
    )
    return frame.astype({"trial_id": "int64", "number": "int64", "state": str})


def trials_frame(storage: str | StudyDatabase, study_name: str) -> pd.DataFrame:
    """One row per trial, with the columns and values of Optuna's ``study.trials_dataframe()``.

    ``storage`` is a storage URL or an open ``StudyDatabase``.
    """
    with reading(storage) as database, database.connect() as connection:
        study = find_study(connection, study_name, database.url)
        trials = _trials(connection, study.study_id)
        if trials.empty:
            return pd.DataFrame()
        position = {trial_id: i for i, trial_id in enumerate(trials["trial_id"].tolist())}
        starts = _local_datetimes(trials["datetime_start"].tolist())
        completes = _local_datetimes(trials["datetime_complete"].tolist())
        columns: dict[str, list[Any]] = {"number": trials["number"].tolist()}
        values = _value_columns(connection, study, position)
        columns |= values
        if len(study.directions) > 1:
            columns["pareto"] = _on_front(values, study.directions, trials["state"].tolist())
        columns["datetime_start"] = starts
        columns["datetime_complete"] = completes
        columns["duration"] = [c - s if c is not None and s is not None else None for s, c in zip(starts, completes)]
        columns |= _param_columns(connection, study.study_id, position)
        columns |= _attr_columns(connection, study.study_id, position, TRIAL_USER_ATTRIBUTES, "user_attrs")
        columns |= _attr_columns(connection, study.study_id, position, TRIAL_SYSTEM_ATTRIBUTES, "system_attrs")
        columns["state"] = trials["state"].tolist()
    # Built from lists, like trials_dataframe's records, so pandas infers the same dtypes.
    return pd.DataFrame(columns)


def _on_front(values: dict[str, list[Any]], directions: tuple[str, ...], states: list[str]) -> list[bool]:
    """Whether each trial is on the Pareto front of the complete trials (Optuna's best_trials)."""
    table = np.array([[np.nan if v is None else v for v in column] for column in values.values()], dtype=float).T
    table[[state != "COMPLETE" for state in states]] = np.nan
    return pareto_mask(table, [d == "MAXIMIZE" for d in directions]).tolist()


def epochs_frame(storage: str | StudyDatabase, study_name: str) -> pd.DataFrame:
    """One row per (trial, epoch): intermediate value, per-epoch metrics, the trial's params.

    Columns: ``number``, ``state``, ``epoch``, ``intermediate_value`` (what the trial reported
    at that step), the columns of ``hpsearch_epoch_metrics`` (task metrics spread, NaN where a
    trial's task lacks one), then ``params_*``. Steps without a metrics row, as in a study run
    outside hpsearch, still appear, with NaN metrics.
    """
    with reading(storage) as database, database.connect() as connection:
        study = find_study(connection, study_name, database.url)
        trials = _trials(connection, study.study_id)[["trial_id", "number", "state"]]
        position = {trial_id: i for i, trial_id in enumerate(trials["trial_id"].tolist())}
        params = pd.DataFrame({"trial_id": trials["trial_id"], **_param_columns(connection, study.study_id, position)})
        steps = _read(
            connection,
            _per_trial(
                TRIAL_INTERMEDIATE_VALUES,
                ["step", "intermediate_value", "intermediate_value_type"],
                study.study_id,
                rename={"step": "epoch"},
            ),
        )
        steps["intermediate_value"] = _stored_floats(steps["intermediate_value"], steps.pop("intermediate_value_type"))
        if em.has_table(connection):
            metrics = em.read_study_rows(connection, study_name).drop(columns="number")
        else:
            metrics = pd.DataFrame(columns=["trial_id", "epoch", *em.FIXED_COLUMNS, em.TASK_METRICS_COLUMN])
    metrics = em.spread_task_metrics(metrics)
    frame = steps.astype({"trial_id": "int64", "epoch": "int64"}).merge(
        metrics.astype({"trial_id": "int64", "epoch": "int64"}), on=["trial_id", "epoch"], how="outer"
    )
    frame = trials.merge(frame, on="trial_id", how="inner").merge(params, on="trial_id", how="left")
    task_metrics = [c for c in metrics.columns if c not in ("trial_id", "epoch", *em.FIXED_COLUMNS, *em.JSON_DIAGNOSTICS)]
    diagnostics = [c for c in em.JSON_DIAGNOSTICS if c in metrics.columns]
    order = ["number", "state", "epoch", "intermediate_value", *em.LEADING_COLUMNS, *task_metrics, *em.TRAILING_COLUMNS, *diagnostics]
    order += [c for c in params.columns if c != "trial_id"]
    return frame[order].sort_values(["number", "epoch"], kind="stable").reset_index(drop=True)


def study_summaries(storage: str | StudyDatabase) -> pd.DataFrame:
    """One row per study: ``study``, ``directions``, ``metric``, ``trials``, a count per state, ``best_value``.

    ``best_value`` is the best complete value of a single-objective study (NaN for none, and for
    multi-objective studies, whose best is a Pareto front). ``metric`` is the name from
    ``study.set_metric_names`` or the metric an hpsearch run monitors, else empty.
    """
    with reading(storage) as database, database.connect() as connection:
        rows = summary_rows(connection)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS).astype({"best_value": "float64"})


def _cell_to_json(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return json.dumps(value, default=str)


def file_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as the export files hold it: ``duration`` in seconds, non-scalar cells as JSON text."""
    frame = frame.copy()
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_timedelta64_dtype(column.dtype):
            frame[name] = column.dt.total_seconds()
        elif column.dtype == object:
            kinds = {type(v) for v in column if not (v is None or (isinstance(v, float) and np.isnan(v)))}
            if len(kinds) > 1 or not kinds <= {str, bool, int, float}:
                # Lists, dicts and mixed columns: JSON text every reader can parse back.
                frame[name] = column.map(_cell_to_json).astype(object)
            else:
                frame[name] = column.where(column.notna(), None)
    return frame


def write_frame(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    """Write ``frame`` (already ``file_ready``) to ``path``; a partial file never takes its name."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        _write(frame, partial, fmt)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _write(frame: pd.DataFrame, partial: Path, fmt: str) -> None:
    if fmt == "csv":
        try:
            import pyarrow as pa
            import pyarrow.csv as pa_csv
        except ImportError:
            frame.to_csv(partial, index=False)
        else:
            # pyarrow's C++ writer is about 7x faster than pandas' on a 100,000-row epoch table;
            # both write the same values (pyarrow quotes text and spells booleans true/false).
            pa_csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), partial)
    elif fmt == "parquet":
        frame.to_parquet(partial, index=False)
    elif fmt == "json":
        frame.to_json(partial, orient="records", date_format="iso", date_unit="us", double_precision=15)
    else:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")


def check_output_dir(out_dir: str | os.PathLike[str]) -> Path:
    """``out_dir`` as a Path if it is, or can be created as, a writable folder; else ``ExportError``."""
    path = Path(out_dir).expanduser()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ExportError(f"cannot write to {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write to {path}: {probe} is not writable")
    return path


def export_study(storage: str | StudyDatabase, study_name: str, fmt: str, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``trials.<fmt>`` and ``epochs.<fmt>`` for ``study_name`` into ``out_dir``; return their paths."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    path = check_output_dir(out_dir)
    # Read both before writing either, so an unreadable study leaves nothing behind.
    with reading(storage) as database:
        frames = {"trials": trials_frame(database, study_name), "epochs": epochs_frame(database, study_name)}
    if frames["trials"].columns.empty:  # a study without trials still gets a header
        frames["trials"] = pd.DataFrame(columns=["number", "value", "datetime_start", "datetime_complete", "duration", "state"])
    written = []
    try:
        path.mkdir(parents=True, exist_ok=True)
        for stem, frame in frames.items():
            written.append(path / f"{stem}.{fmt}")
            write_frame(file_ready(frame), written[-1], fmt)
    except OSError as error:  # e.g. a read-only file system, which os.access does not see for root
        raise ExportError(f"cannot write to {path}: {error.strerror or error}") from None
    return written
