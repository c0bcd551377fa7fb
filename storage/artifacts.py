"""``CheckpointArchive``: trial checkpoints in an artifact store, for workers that share no filesystem.

An archive is Optuna's ``FileSystemArtifactStore`` (``file:///path``) or ``Boto3ArtifactStore``
(``s3://bucket/prefix``, anything that speaks S3: credentials, region and endpoint come from the
usual ``AWS_*`` variables). Objects are written under fixed keys, so a retried upload of the same
file is idempotent and a trial holds one ``last.pt`` and one ``best.pt``, never one per epoch.
Transient errors (the endpoint unreachable, a dropped connection, a 5xx) are retried with
backoff until the store has been away ``timeout`` seconds, as the database's are.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote, urlsplit

from hpsearch.storage.errors import StorageError
from hpsearch.storage.retry import DEFAULT_DB_TIMEOUT_S, error_chain
from hpsearch.storage.urls import mask_password

__all__ = ["ArtifactStoreError", "ArtifactStoreUnavailable", "CheckpointArchive"]

T = TypeVar("T")
SCHEMES = ("file", "s3")
# Seconds one S3 request may wait to connect, and for each read of the answer: a stalled endpoint
# becomes a retried error in seconds, not botocore's default minute.
S3_CONNECT_TIMEOUT_S = 5.0
S3_READ_TIMEOUT_S = 10.0
# S3 error codes that say "try again"; any 5xx says so too.
_TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling",
                              "ThrottlingException", "RequestTimeTooSkewed"})
_PROBE_NAME = ".hpsearch-probe"
# How long a command that only reads the store (load_model) waits for it to answer: it is not a
# worker with finished epochs to save, and a wrong endpoint should be said within seconds.
READ_WAIT_S = 15.0


class ArtifactStoreError(StorageError):
    """The artifact store cannot be used as given (URL, bucket, credentials, permissions); one line."""


class ArtifactStoreUnavailable(Exception):
    """The artifact store did not answer for ``timeout`` seconds during a run."""


class CheckpointArchive:
    """Uploads and downloads checkpoint files under ``prefix`` in an Optuna artifact store.

    ``open(url)`` makes one; ``check()`` writes and removes a probe object, so a wrong bucket,
    missing credentials or an unwritable folder is found before any trial starts. ``upload`` and
    ``download`` ride out outages up to ``timeout`` seconds (``ArtifactStoreUnavailable`` after),
    saying when one begins and ends through ``echo``.
    """

    def __init__(self, url: str, store: Any, prefix: str, timeout: float,
                 echo: Callable[[str], None] | None = None) -> None:
        self.url, self.store, self.prefix, self.timeout, self.echo = url, store, prefix, timeout, echo

    @classmethod
    def open(cls, url: str, timeout: float = DEFAULT_DB_TIMEOUT_S, echo: Callable[[str], None] | None = None) -> CheckpointArchive:
        """The archive at ``url`` (``file:///path`` or ``s3://bucket/prefix``); ``ArtifactStoreError`` if malformed."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES or "://" not in url:
            raise ArtifactStoreError(f"unsupported artifact store URL {mask_password(url)!r}; use file:///absolute/path "
                                     "or s3://bucket/prefix")
        if "@" in parts.netloc:
            raise ArtifactStoreError(f"artifact store URL {mask_password(url)!r} holds credentials; give them in "
                                     "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead, so they are never stored")
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ArtifactStoreError(f"file artifact store URL {url!r} names a host; use file:///absolute/path")
            path = Path(unquote(parts.path))
            if not path.is_absolute():
                raise ArtifactStoreError(f"file artifact store URL {url!r} needs an absolute path: file:///absolute/path")
            return cls(url, _atomic_file_store(path), "", timeout, echo)
        if not parts.netloc:
            raise ArtifactStoreError(f"S3 artifact store URL {url!r} names no bucket; use s3://bucket/prefix")
        return cls(url, _s3_store(parts.netloc, url), parts.path.strip("/"), timeout, echo)

    @property
    def shown_url(self) -> str:
        return mask_password(self.url)

    def uri(self, key: str) -> str:
        """Where ``key`` lives, as a URL (``s3://bucket/prefix/key``, ``file:///path/key``)."""
        return f"{self.url.rstrip('/')}/{key}"

    def check(self) -> None:
        """Write, read back and remove a small probe object; ``ArtifactStoreError`` saying what is wrong."""
        key = self._key(f"{_PROBE_NAME}-{uuid.uuid4().hex}")
        try:
            import io

            self.store.write(key, io.BytesIO(b"hpsearch"))
            with self.store.open_reader(key) as reader:
                reader.read()
            self.store.remove(key)
        except Exception as error:  # noqa: BLE001 - every failure here is the user's to fix, in one line
            raise ArtifactStoreError(f"cannot use artifact store {self.shown_url}: {_describe(error, self.url)}") from None

    def upload(self, local_path: str | os.PathLike[str], key: str) -> None:
        """Store the file at ``local_path`` as ``key``, replacing what was there; retried through outages."""

        def put() -> None:
            with open(local_path, "rb") as file:
                self.store.write(self._key(key), file)

        self._retrying(f"upload of {key}", put)

    def download(self, key: str, local_path: str | os.PathLike[str]) -> bool:
        """Copy ``key`` to ``local_path`` (whole, or not at all); False if the store has no such object."""
        destination = Path(local_path)

        from optuna.artifacts.exceptions import ArtifactNotFound

        def get() -> bool:
            try:
                reader = self.store.open_reader(self._key(key))
            except ArtifactNotFound:
                return False
            destination.parent.mkdir(parents=True, exist_ok=True)
            partial = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.partial")
            try:
                with reader, open(partial, "wb") as file:
                    while chunk := reader.read(1 << 20):
                        file.write(chunk)
                os.replace(partial, destination)
            finally:
                partial.unlink(missing_ok=True)
            return True

        return self._retrying(f"download of {key}", get)

    def fetch(self, key: str, local_path: str | os.PathLike[str]) -> bool:
        """``download`` for a reader outside a run: whatever stops it is an ``ArtifactStoreError``, one line.

        An outage past the archive's timeout, missing credentials and a refusal are the user's to fix.
        """
        try:
            return self.download(key, local_path)
        except ArtifactStoreUnavailable as error:
            raise ArtifactStoreError(str(error)) from None
        except Exception as error:  # noqa: BLE001 - each is described in one line: credentials, access, disk
            raise ArtifactStoreError(f"cannot read {key} from artifact store {self.shown_url}: {_describe(error, self.url)}") from None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _retrying(self, what: str, action: Callable[[], T]) -> T:
        """``action()``, retried with jittered backoff while its errors are transient, for up to ``timeout`` s."""
        since: float | None = None
        delay = 0.1
        while True:
            try:
                result = action()
            except Exception as error:
                if not _is_transient(error):
                    raise
                now = time.monotonic()
                if since is None:
                    since = now
                    self._say(f"artifact store {self.shown_url} unavailable ({_describe(error, self.url)}); "
                              f"retrying the {what} for up to {self.timeout:.0f} s")
                if now - since >= self.timeout:
                    raise ArtifactStoreUnavailable(f"the artifact store {self.shown_url} has not answered for "
                                                   f"{now - since:.0f} s ({_describe(error, self.url)})") from error
                time.sleep(max(0.0, min(delay * (1 + random.random()), self.timeout - (now - since))))
                delay = min(delay * 2, 2.0)
                continue
            if since is not None:
                self._say(f"artifact store {self.shown_url} back after {time.monotonic() - since:.1f} s")
            return result

    def _say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)


def _atomic_file_store(base_path: Path) -> Any:
    """Optuna's file store, writing each object whole: a temporary file renamed into place, parents made.

    A worker killed mid-write leaves the previous object, never a truncated one.
    """
    # Imported here, not with this module: optuna.artifacts imports boto3 whenever it is installed,
    # a tenth of a second of every worker's start-up that a search without a store never uses.
    from optuna.artifacts import FileSystemArtifactStore

    class AtomicFileStore(FileSystemArtifactStore):
        def write(self, artifact_id: str, content_body: BinaryIO) -> None:
            path = self._get_filepath(artifact_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
            try:
                with open(partial, "wb") as file:
                    while chunk := content_body.read(1 << 20):
                        file.write(chunk)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)

    return AtomicFileStore(base_path)


def _s3_store(bucket: str, url: str) -> object:
    """Optuna's ``Boto3ArtifactStore`` for ``bucket`` (of store ``url``), with a client configured from the ``AWS_*`` variables."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ArtifactStoreError("s3:// artifact stores need boto3: pip install 'hpsearch[s3]'") from None
    from optuna.artifacts import Boto3ArtifactStore

    # Retries are this module's, bounded by the archive's timeout, not botocore's.
    config = Config(connect_timeout=S3_CONNECT_TIMEOUT_S, read_timeout=S3_READ_TIMEOUT_S,
                    retries={"total_max_attempts": 1, "mode": "standard"})
    # A session of its own: boto3's default one keeps the credentials it found first, for good.
    try:
        client = boto3.session.Session().client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None, config=config)
    except Exception as error:  # noqa: BLE001 - partial credentials, a malformed endpoint: the user's to fix, in one line
        raise ArtifactStoreError(f"cannot use artifact store {mask_password(url)}: {_describe(error, url)}") from None
    # avoid_buf_copy: the file is read straight from disk; a checkpoint is not copied into memory first.
    return Boto3ArtifactStore(bucket, client, avoid_buf_copy=True)


def _is_transient(error: BaseException) -> bool:
    """Whether ``error`` says the store is away for a while (unreachable, connection lost, 5xx), not that the call is wrong."""
    try:
        import botocore.exceptions as botocore_errors
    except ImportError:
        return False
    for cause in error_chain(error):
        if isinstance(cause, (botocore_errors.HTTPClientError, botocore_errors.ConnectionError,
                              botocore_errors.IncompleteReadError, botocore_errors.ResponseStreamingError)):
            return True
        if isinstance(cause, botocore_errors.ClientError):
            response = cause.response or {}
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return status >= 500 or status == 429 or response.get("Error", {}).get("Code") in _TRANSIENT_CODES
    return False


def _describe(error: BaseException, url: str) -> str:
    """What is wrong with the store, in words a user can act on, credentials masked."""
    try:
        import botocore.exceptions as botocore_errors
    except ImportError:
        botocore_errors = None
    if botocore_errors is not None:
        for cause in error_chain(error):
            if isinstance(cause, (botocore_errors.NoCredentialsError, botocore_errors.PartialCredentialsError)):
                return "no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            if isinstance(cause, botocore_errors.NoRegionError):
                return "no AWS region; set AWS_DEFAULT_REGION"
            if isinstance(cause, botocore_errors.ClientError):
                code = (cause.response or {}).get("Error", {}).get("Code", "")
                if code == "NoSuchBucket":
                    bucket = urlsplit(url).netloc
                    return f"no bucket {bucket!r} there (create it, or fix the URL or AWS_ENDPOINT_URL)"
                if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                    return f"access refused ({code}); check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy"
            if isinstance(cause, botocore_errors.EndpointConnectionError):
                endpoint = mask_password(str(cause.kwargs.get("endpoint_url", "the endpoint")))
                if os.environ.get("AWS_ENDPOINT_URL"):
                    return f"cannot reach {endpoint}; check that the S3 server at AWS_ENDPOINT_URL runs and listens there"
                return f"cannot reach {endpoint}; for MinIO, Ceph or another S3-compatible server, set AWS_ENDPOINT_URL"
    if isinstance(error, PermissionError):
        return f"permission denied writing {error.filename}"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    text = str(error).strip().splitlines()
    return mask_password(f"{type(error).__name__}: {text[0]}" if text else type(error).__name__)
