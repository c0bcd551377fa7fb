"""The storage proxy's client: what a worker behind the proxy cannot do says so in one line."""

import pytest

from hpsearch.storage.errors import StorageError
from hpsearch.storage.proxy_client import ProxyEpochTable, ProxyStorage
from hpsearch.storage.retry import DatabaseRetry
from hpsearch.storage.urls import parse_proxy_url


def test_reading_other_trials_epoch_rows_behind_the_proxy_names_the_way_out() -> None:
    url = "grpc://127.0.0.1:1"  # nothing listens: building the client connects nothing, and reading asks nothing
    storage = ProxyStorage(parse_proxy_url(url), DatabaseRetry(url, 1))
    with pytest.raises(StorageError, match="run this multi-objective study's workers on the database URL, or with --pruner none"):
        ProxyEpochTable(storage).rows_by_trial("study", 3)
    storage.close()


def test_a_worker_behind_the_proxy_never_starts_a_fresh_trial_in_queue_only_mode() -> None:
    from hpsearch.storage.optuna_seam import QueueEmpty

    url = "grpc://127.0.0.1:1"
    storage = ProxyStorage(parse_proxy_url(url), DatabaseRetry(url, 1))
    storage.queue_only = True
    with pytest.raises(QueueEmpty):
        storage.create_new_trial(0)  # raised before any call to the (absent) proxy
    storage.close()
