"""Trials read with Core SQL, built as ``RDBStorage`` builds them (9 of the package's docstring)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial

from hpsearch.storage.optuna_seam.tables import NONFINITE_VALUES, TRIALS_TYPED, ValueType

# --- 9. Trials read with Core SQL, as ``RDBStorage`` builds them. --------------------------------
# Optuna's ORM reads a trial in six statements (the row, then one per child table) and builds a
# mapped object per row; a worker reads its trial three times per trial (the take, the tell, the
# callbacks), about a third of its statements. Here: the trials' rows, then every child row of them
# in one UNION ALL, each cast to (key text, number float, text).
# (table, its id column, the key, the number or None, the text) for each child table of trials.
_CHILDREN = (
    ("trial_params", "param_id", "param_name", "param_value", "distribution_json"),
    ("trial_values", "trial_value_id", "objective", "value", "value_type"),
    ("trial_intermediate_values", "trial_intermediate_value_id", "step", "intermediate_value", "intermediate_value_type"),
    ("trial_user_attributes", "trial_user_attribute_id", "key", None, "value_json"),
    ("trial_system_attributes", "trial_system_attribute_id", "key", None, "value_json"),
)
_PARAM, _VALUE, _INTERMEDIATE, _USER, _SYSTEM = range(len(_CHILDREN))


def _stored_number(number: float | None, value_type: str) -> float:
    return float(number) if value_type == ValueType.FINITE else NONFINITE_VALUES[value_type]


def _local(stored: datetime | None) -> datetime | None:
    """A stored naive-UTC datetime in naive local time, as Optuna's ``TrialModel`` shows it."""
    return None if stored is None else stored.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


def _children_statement() -> sa.CompoundSelect:
    parts = []
    for kind, (name, row_id, key, number, text) in enumerate(_CHILDREN):
        child = sa.table(name, *(sa.column(c) for c in ("trial_id", row_id, key, text, number) if c is not None))
        parts.append(
            sa.select(
                child.c.trial_id,
                sa.literal_column(str(kind), sa.Integer).label("kind"),
                child.c[row_id].label("row_id"),
                sa.cast(child.c[key], sa.String).label("key"),
                sa.cast(child.c[number] if number else sa.null(), sa.Float).label("number"),
                sa.cast(child.c[text], sa.Text).label("text"),
            ).where(child.c.trial_id.in_(sa.bindparam("ids", expanding=True)))
        )
    return sa.union_all(*parts)


# Built once: SQLAlchemy then compiles each once per engine, and a read costs the round trips.
_CHILDREN_OF = _children_statement()
_TRIAL_BY_ID = sa.select(TRIALS_TYPED).where(TRIALS_TYPED.c.trial_id == sa.bindparam("trial_id"))
_IDS_PER_READ = 500  # under every dialect's limit on bound parameters


def read_trials(connection: sa.Connection, where: sa.ColumnElement[bool] | int) -> list[FrozenTrial]:
    """The trials that ``where`` (on ``TRIALS_TYPED``, or one trial's id) selects, by id, each as ``RDBStorage.get_trial`` builds it."""
    if isinstance(where, int):
        rows = connection.execute(_TRIAL_BY_ID, {"trial_id": where}).all()
    else:
        rows = connection.execute(sa.select(TRIALS_TYPED).where(where).order_by(TRIALS_TYPED.c.trial_id)).all()
    children: dict[int, list[Any]] = {row.trial_id: [] for row in rows}
    ids = list(children)
    for at in range(0, len(ids), _IDS_PER_READ):
        for child in connection.execute(_CHILDREN_OF, {"ids": ids[at : at + _IDS_PER_READ]}):
            children[child.trial_id].append(child)
    distributions: dict[str, Any] = {}  # JSON to distribution, parsed once per read
    return [
        _frozen_trial(row, sorted(children[row.trial_id], key=lambda c: (c.kind, c.row_id)), distributions) for row in rows
    ]


def _frozen_trial(row: Any, children: list[Any], distributions: dict[str, Any]) -> FrozenTrial:
    params: dict[str, Any] = {}
    trial_distributions: dict[str, Any] = {}
    values: dict[int, float] = {}
    intermediate: dict[int, float] = {}
    user: dict[str, Any] = {}
    system: dict[str, Any] = {}
    for child in children:
        if child.kind == _PARAM:
            distribution = distributions.get(child.text)
            if distribution is None:
                distribution = distributions[child.text] = optuna.distributions.json_to_distribution(child.text)
            trial_distributions[child.key] = distribution
            params[child.key] = distribution.to_external_repr(child.number)
        elif child.kind == _VALUE:
            values[int(child.key)] = _stored_number(child.number, child.text)
        elif child.kind == _INTERMEDIATE:
            intermediate[int(child.key)] = _stored_number(child.number, child.text)
        else:
            (user if child.kind == _USER else system)[child.key] = json.loads(child.text)
    return FrozenTrial(
        number=row.number,
        state=row.state,
        value=None,
        values=[values[objective] for objective in sorted(values)] if values else None,
        datetime_start=_local(row.datetime_start),
        datetime_complete=_local(row.datetime_complete),
        params=params,
        distributions=trial_distributions,
        user_attrs=user,
        system_attrs=system,
        intermediate_values=intermediate,
        trial_id=row.trial_id,
    )
