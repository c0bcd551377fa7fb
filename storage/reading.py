"""Reading a study database: ``find_study``, the studies' summary, and the errors of reading.

Without pandas: ``hpsearch trials`` needs these and no DataFrame. A missing SQLite file or a
database without Optuna's tables is a ``StorageReadError``, an unknown study an
``UnknownStudyError``; both are ``ExportError``, a ``StorageError`` the CLI prints as one line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.engine import Connection

from hpsearch.storage.attributes import METRIC_ATTR
from hpsearch.storage.errors import StorageError
from hpsearch.storage.optuna_seam import (
    METRIC_NAMES_ATTR,
    STUDIES,
    STUDY_DIRECTIONS,
    STUDY_SYSTEM_ATTRIBUTES,
    STUDY_USER_ATTRIBUTES,
    TRIAL_VALUES,
    TRIALS,
    ValueType,
    state_is,
)
from hpsearch.storage.urls import is_proxy_url, mask_password

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
#: The summary's integer columns: the trial count, then one count per state.
COUNT_COLUMNS = ("trials", *(state.lower() for state in STATES))
SUMMARY_COLUMNS = ("study", "directions", "metric", *COUNT_COLUMNS, "best_value")


class ExportError(StorageError):
    """A study cannot be read or written out; the message says what to check."""


class StorageReadError(ExportError):
    """The study database cannot be read: no such file, unreachable, or not an Optuna database."""


class UnknownStudyError(StorageReadError):
    """No study of that name in the database."""


@dataclass(frozen=True)
class StudyInfo:
    """What the export needs to know about a study besides its trials."""

    study_id: int
    name: str
    directions: tuple[str, ...]  # "MINIMIZE" / "MAXIMIZE", by objective
    metric_names: tuple[str, ...] | None


def unknown_study(study_name: str, names: Sequence[str], url: str = "") -> UnknownStudyError:
    """The one line for a study name that ``url``, holding the studies ``names``, does not have."""
    where = f" in {mask_password(url)}" if url else ""
    known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "none"
    # hpsearch studies reads the database itself, so behind the storage proxy it takes the database's URL.
    lister = "hpsearch studies --storage DATABASE_URL" if is_proxy_url(url) else "hpsearch studies"
    return UnknownStudyError(f"no study named {study_name!r}{where} (studies there: {known}; {lister} lists them)")


def find_study(connection: Connection, study_name: str, url: str = "") -> StudyInfo:
    """The study called ``study_name``, or ``UnknownStudyError`` listing the ones there are."""
    study_id = connection.execute(sa.select(STUDIES.c.study_id).where(STUDIES.c.study_name == study_name)).scalar()
    if study_id is None:
        names = connection.execute(sa.select(STUDIES.c.study_name).order_by(STUDIES.c.study_id)).scalars().all()
        raise unknown_study(study_name, names, url)
    by_objective, attrs = STUDY_DIRECTIONS, STUDY_SYSTEM_ATTRIBUTES
    directions = connection.execute(
        sa.select(by_objective.c.direction).where(by_objective.c.study_id == study_id).order_by(by_objective.c.objective)
    ).scalars().all()
    names_json = connection.execute(
        sa.select(attrs.c.value_json).where(attrs.c.study_id == study_id, attrs.c.key == METRIC_NAMES_ATTR)
    ).scalar()
    metric_names = tuple(json.loads(names_json)) if names_json else None
    return StudyInfo(int(study_id), study_name, tuple(str(d) for d in directions), metric_names)


def _best(extremes: dict[str, tuple[float, float]], minimize: bool) -> float:
    """The best value from {value_type: (min, max)} of a study's complete trials; NaN for none."""
    if not extremes:
        return math.nan
    finite = ValueType.FINITE
    if minimize:
        return -math.inf if ValueType.INF_NEG in extremes else extremes[finite][0] if finite in extremes else math.inf
    return math.inf if ValueType.INF_POS in extremes else extremes[finite][1] if finite in extremes else -math.inf


def summary_rows(connection: Connection) -> list[dict[str, Any]]:
    """One dict per study, keyed by ``SUMMARY_COLUMNS``: what ``hpsearch studies`` and ``study_summaries`` show."""
    run = lambda query: connection.execute(query).all()
    s, d, t, v = STUDIES, STUDY_DIRECTIONS, TRIALS, TRIAL_VALUES
    studies = run(sa.select(s.c.study_id, s.c.study_name).order_by(s.c.study_id))
    directions = run(sa.select(d.c.study_id, d.c.direction).order_by(d.c.study_id, d.c.objective))
    counts = run(sa.select(t.c.study_id, t.c.state, sa.func.count()).group_by(t.c.study_id, t.c.state))
    best = run(
        sa.select(t.c.study_id, v.c.value_type, sa.func.min(v.c.value), sa.func.max(v.c.value))
        .join_from(v, t, t.c.trial_id == v.c.trial_id)
        .where(state_is(t.c.state, TrialState.COMPLETE), v.c.objective == 0)
        .group_by(t.c.study_id, v.c.value_type)
    )
    system, user = STUDY_SYSTEM_ATTRIBUTES, STUDY_USER_ATTRIBUTES
    names = run(
        sa.union_all(
            sa.select(system.c.study_id, system.c.key, system.c.value_json).where(system.c.key == METRIC_NAMES_ATTR),
            sa.select(user.c.study_id, user.c.key, user.c.value_json).where(user.c.key == METRIC_ATTR),
        )
    )
    by_study: dict[int, list[str]] = {}
    for study_id, direction in directions:
        by_study.setdefault(study_id, []).append(str(direction).lower())
    count = {(study_id, str(state)): n for study_id, state, n in counts}
    extremes: dict[int, dict[str, tuple[float, float]]] = {}
    for study_id, kind, low, high in best:
        extremes.setdefault(study_id, {})[str(kind)] = (low, high)
    metric: dict[int, str] = {}
    for study_id, _, value_json in sorted(names, key=lambda row: row[1] != METRIC_NAMES_ATTR):
        value = json.loads(value_json)  # Optuna's metric names win over the hpsearch attribute
        metric.setdefault(study_id, ",".join(value) if isinstance(value, list) else str(value))
    rows = []
    for study_id, name in studies:
        found = by_study.get(study_id, [])
        row: dict[str, Any] = {"study": name, "directions": ",".join(found), "metric": metric.get(study_id, "")}
        row["trials"] = sum(count.get((study_id, state), 0) for state in STATES)
        row |= {state.lower(): count.get((study_id, state), 0) for state in STATES}
        single = len(found) == 1
        row["best_value"] = _best(extremes.get(study_id, {}), found[0] == "minimize") if single else math.nan
        rows.append(row)
    return rows
