"""Storage URLs and engines, the per-epoch metrics table, and export to pandas."""

from hpsearch.storage.engine import create_engine, open_optuna_storage
from hpsearch.storage.urls import StorageURLError, mask_password, parse_storage_url, resolve_storage_url

__all__ = ["StorageURLError", "create_engine", "mask_password", "open_optuna_storage", "parse_storage_url", "resolve_storage_url"]
