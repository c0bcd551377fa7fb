"""Opening an existing study database to read it: ``read_connection``, ``find_study`` and their errors.

Without pandas: ``hpsearch trials`` needs these and no DataFrame. Readers never create anything:
a missing SQLite file or a database without Optuna's tables is a ``StorageReadError``, an unknown
study an ``UnknownStudyError``; both are ``ExportError``, a ``ValueError`` the CLI turns into a
one-line usage error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hpsearch.storage.engine import create_engine
from hpsearch.storage.optuna_seam import METRIC_NAMES_ATTR, STUDIES, STUDY_DIRECTIONS, STUDY_SYSTEM_ATTRIBUTES
from hpsearch.storage.urls import mask_password, parse_storage_url


class ExportError(ValueError):
    """A study cannot be read or written out; the message says what to check."""


class StorageReadError(ExportError):
    """The study database cannot be read: no such file, unreachable, or not an Optuna database."""


class UnknownStudyError(StorageReadError):
    """No study of that name in the database."""


@contextmanager
def read_connection(url: str) -> Iterator[Connection]:
    """A connection to an existing study database; creates no file, table or row."""
    parsed = parse_storage_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database).is_file():
        raise StorageReadError(
            f"no database file {parsed.database}; pass --storage URL or set HPSEARCH_STORAGE "
            "(the default is sqlite:///hpsearch.db in the working directory)"
        )
    engine = create_engine(url)
    try:
        try:
            connection = engine.connect()
            has_studies = sa.inspect(connection).has_table(STUDIES.name)
        except sa.exc.DBAPIError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
            raise StorageReadError(f"cannot read storage {mask_password(url)}: {mask_password(reason)}") from None
        with connection:
            if not has_studies:
                raise StorageReadError(f"{mask_password(url)} holds no Optuna studies (it has no '{STUDIES.name}' table)")
            yield connection
    finally:
        engine.dispose()


@dataclass(frozen=True)
class StudyInfo:
    """What the export needs to know about a study besides its trials."""

    study_id: int
    name: str
    directions: tuple[str, ...]  # "MINIMIZE" / "MAXIMIZE", by objective
    metric_names: tuple[str, ...] | None


def find_study(connection: Connection, study_name: str, url: str = "") -> StudyInfo:
    """The study called ``study_name``, or ``UnknownStudyError`` listing the ones there are."""
    study_id = connection.execute(sa.select(STUDIES.c.study_id).where(STUDIES.c.study_name == study_name)).scalar()
    if study_id is None:
        names = connection.execute(sa.select(STUDIES.c.study_name).order_by(STUDIES.c.study_id)).scalars().all()
        where = f" in {mask_password(url)}" if url else ""
        known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "none"
        raise UnknownStudyError(f"no study named {study_name!r}{where} (studies there: {known}; hpsearch studies lists them)")
    by_objective, attrs = STUDY_DIRECTIONS, STUDY_SYSTEM_ATTRIBUTES
    directions = connection.execute(
        sa.select(by_objective.c.direction).where(by_objective.c.study_id == study_id).order_by(by_objective.c.objective)
    ).scalars().all()
    names_json = connection.execute(
        sa.select(attrs.c.value_json).where(attrs.c.study_id == study_id, attrs.c.key == METRIC_NAMES_ATTR)
    ).scalar()
    metric_names = tuple(json.loads(names_json)) if names_json else None
    return StudyInfo(int(study_id), study_name, tuple(str(d) for d in directions), metric_names)
