"""Storage URLs and engines, the per-epoch metrics table, and export to pandas.

Optuna's private API and table layout are used in ``optuna_seam`` only.
"""

from __future__ import annotations

import importlib
from typing import Any

# Each name's module, imported when the name is first used: importing one light module of this
# package (``retry``, ``urls``) must not load pandas, SQLAlchemy and Optuna for the CLI's --help.
_EXPORTS = {
    "StudyDatabase": "database", "StorageError": "errors", "StorageOpenError": "errors",
    "EpochMetricsTable": "epoch_metrics", "delete_study": "epoch_metrics",
    "ExportError": "reading", "StorageReadError": "reading", "UnknownStudyError": "reading",
    "epochs_frame": "export", "export_study": "export", "study_summaries": "export", "trials_frame": "export",
    "trial_id": "optuna_seam",
    "DatabaseRetry": "retry", "DatabaseUnavailable": "retry", "is_transient": "retry",
    "StorageURLError": "urls", "mask_password": "urls", "parse_storage_url": "urls", "resolve_storage_url": "urls",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
