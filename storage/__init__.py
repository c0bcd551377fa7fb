"""Storage URLs and engines, the per-epoch metrics table, and export to pandas.

Optuna's private API and table layout are used in ``optuna_seam`` only.
"""

from hpsearch.storage.engine import create_engine, open_optuna_storage
from hpsearch.storage.epoch_metrics import EpochMetricsTable, delete_study
from hpsearch.storage.export import (
    ExportError,
    StorageReadError,
    UnknownStudyError,
    epochs_frame,
    export_study,
    study_summaries,
    trials_frame,
)
from hpsearch.storage.optuna_seam import trial_id
from hpsearch.storage.retry import DatabaseRetry, DatabaseUnavailable, is_transient
from hpsearch.storage.urls import StorageURLError, mask_password, parse_storage_url, resolve_storage_url

__all__ = [
    "DatabaseRetry",
    "DatabaseUnavailable",
    "EpochMetricsTable",
    "ExportError",
    "StorageReadError",
    "StorageURLError",
    "UnknownStudyError",
    "create_engine",
    "delete_study",
    "epochs_frame",
    "export_study",
    "is_transient",
    "mask_password",
    "open_optuna_storage",
    "parse_storage_url",
    "resolve_storage_url",
    "study_summaries",
    "trial_id",
    "trials_frame",
]
