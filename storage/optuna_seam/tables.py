"""Optuna's tables, as hpsearch reads and writes them (5 of the package's docstring)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from optuna.trial import TrialState


# --- 5. Optuna's tables: only the columns hpsearch uses. Optuna creates and owns them. -----------
def _table(name: str, *columns: str) -> sa.TableClause:
    # Untyped columns: reads return what the driver returns (a state name, JSON text, a
    # datetime or its text), exactly as raw SQL would.
    return sa.table(name, *(sa.column(column) for column in columns))


STUDIES = _table("studies", "study_id", "study_name")
STUDY_DIRECTIONS = _table("study_directions", "study_id", "objective", "direction")
STUDY_USER_ATTRIBUTES = _table("study_user_attributes", "study_id", "key", "value_json")
STUDY_SYSTEM_ATTRIBUTES = _table("study_system_attributes", "study_id", "key", "value_json")
TRIALS = _table("trials", "trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete")
TRIAL_PARAMS = _table("trial_params", "trial_id", "param_name", "param_value", "distribution_json")
TRIAL_VALUES = _table("trial_values", "trial_id", "objective", "value", "value_type")
TRIAL_INTERMEDIATE_VALUES = _table(
    "trial_intermediate_values", "trial_id", "step", "intermediate_value", "intermediate_value_type"
)
TRIAL_USER_ATTRIBUTES = _table("trial_user_attributes", "trial_id", "key", "value_json")
TRIAL_SYSTEM_ATTRIBUTES = _table("trial_system_attributes", "trial_id", "key", "value_json")
TRIAL_HEARTBEATS = _table("trial_heartbeats", "trial_id", "heartbeat")
OPTUNA_TABLES = (
    STUDIES,
    STUDY_DIRECTIONS,
    STUDY_USER_ATTRIBUTES,
    STUDY_SYSTEM_ATTRIBUTES,
    TRIALS,
    TRIAL_PARAMS,
    TRIAL_VALUES,
    TRIAL_INTERMEDIATE_VALUES,
    TRIAL_USER_ATTRIBUTES,
    TRIAL_SYSTEM_ATTRIBUTES,
    TRIAL_HEARTBEATS,
)


class ValueType:
    """How ``trial_values.value_type`` and ``trial_intermediate_values.intermediate_value_type``
    say what a stored number is; the number is NULL unless the type is ``FINITE``."""

    FINITE = "FINITE"
    INF_POS = "INF_POS"
    INF_NEG = "INF_NEG"
    NAN = "NAN"  # intermediate values only: a trial's value is never NaN


# What a stored number that is not finite stands for, by its type.
NONFINITE_VALUES = {
    ValueType.INF_POS: float("inf"),
    ValueType.INF_NEG: float("-inf"),
    ValueType.NAN: float("nan"),
}
# The study system attribute where Optuna keeps ``study.set_metric_names``.
METRIC_NAMES_ATTR = "study:metric_names"


def state_is(column: sa.ColumnElement[Any], state: TrialState) -> sa.ColumnElement[bool]:
    """``column = '<STATE NAME>'``: Optuna stores a trial's state as its name. The name is written into
    the SQL as a literal, which PostgreSQL compares with its enum column without a cast."""
    return column == sa.literal_column(f"'{state.name}'")


# ``trials`` as the storage reads and writes it, typed so that SQLAlchemy stores and reads the
# state and the timestamps the way Optuna's models do on every dialect (SQLite keeps a datetime as text).
TRIALS_TYPED = sa.table(
    TRIALS.name,
    sa.column(TRIALS.c.trial_id.name, sa.Integer),
    sa.column(TRIALS.c.number.name, sa.Integer),
    sa.column(TRIALS.c.study_id.name, sa.Integer),
    sa.column(TRIALS.c.state.name, sa.Enum(TrialState)),
    sa.column(TRIALS.c.datetime_start.name, sa.DateTime),
    sa.column(TRIALS.c.datetime_complete.name, sa.DateTime),
)
HEARTBEATS_TYPED = sa.table(
    TRIAL_HEARTBEATS.name,
    sa.column(TRIAL_HEARTBEATS.c.trial_id.name, sa.Integer),
    sa.column(TRIAL_HEARTBEATS.c.heartbeat.name, sa.DateTime),
)


def stored_now() -> datetime:
    """The current time as Optuna stores trial datetimes: naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
