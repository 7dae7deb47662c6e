"""The client's storage requests survive a storage outage of a few seconds.

:class:`RetryingStorage` wraps the executor's storage plugin: a request that fails for a
transient reason (connection refused or reset, a timeout, 5xx, 503 SlowDown: a
:class:`~wren.errors.StorageError` that is not about a missing key or bucket or bad
credentials, or an ``OSError``) is sent again after a jittered back-off that doubles from 0.5 s
(the policy of call retries), for up to ``wren.storage_retry_seconds``. Uploads are idempotent
(same key, same bytes), so a retried put is safe. Everything else is the plugin's.
"""
from __future__ import annotations

import logging
import time
from typing import IO, Any, TypeVar
from collections.abc import Callable, Iterable, Iterator

from wren.backoff import backoff
from wren.errors import (
    StorageAuthError,
    StorageError,
    StorageInvalidObjectError,
    StorageNoSuchBucketError,
    StorageNoSuchKeyError,
)
from wren.storage.base import ObjectInfo, StorageBackend

logger = logging.getLogger("wren.storage")

T = TypeVar("T")
_FINAL = (StorageNoSuchKeyError, StorageNoSuchBucketError, StorageAuthError, StorageInvalidObjectError)


def transient(exc: BaseException) -> bool:
    """Whether another try of the same request may succeed."""
    if isinstance(exc, _FINAL):
        return False
    return isinstance(exc, (StorageError, OSError))


class RetryingStorage(StorageBackend):
    """``inner`` with transient failures retried for up to ``seconds``."""

    def __init__(self, inner: StorageBackend, seconds: float):
        self._inner = inner
        self._seconds = seconds
        self.config = inner.config
        # the plugin's class attributes (the ABC's defaults would shadow them otherwise)
        for attr in ("name", "schemes", "local_only", "creates_bucket_on_put", "config_class"):
            if hasattr(inner, attr):
                setattr(self, attr, getattr(inner, attr))

    def __getattr__(self, attr: str) -> Any:  # schemes, local_only, worker_config, _path...
        return getattr(self._inner, attr)

    @property
    def inner(self) -> StorageBackend:
        """The storage plugin itself."""
        return self._inner

    def _retry(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        deadline = time.monotonic() + self._seconds
        tries = 0
        while True:
            try:
                return fn(*args)
            except BaseException as exc:
                left = deadline - time.monotonic()
                if not transient(exc) or left <= 0:
                    raise
                delay = min(left, backoff(tries))
                tries += 1
                logger.info("storage %s failed (%s); retry %d in %.1f s", what, exc, tries, delay)
                time.sleep(delay)

    @property
    def default_bucket(self) -> str:
        return self._inner.default_bucket

    def put_object(self, bucket: str, key: str, body: bytes | IO[bytes]) -> None:
        if isinstance(body, (bytes, bytearray, memoryview)):
            self._retry("put", self._inner.put_object, bucket, key, body)
        elif body.seekable():  # each attempt sends it from where it was
            start = body.tell()

            def put() -> None:
                body.seek(start)
                self._inner.put_object(bucket, key, body)

            self._retry("put", put)
        else:
            self._inner.put_object(bucket, key, body)  # a stream cannot be sent twice

    def get_object(self, bucket: str, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        return self._retry("get", self._inner.get_object, bucket, key, byte_range)

    def open_object(self, bucket: str, key: str, byte_range: tuple[int, int] | None = None) -> IO[bytes]:
        return self._retry("open", self._inner.open_object, bucket, key, byte_range)

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        return self._retry("head", self._inner.head_object, bucket, key)

    def delete_objects(self, bucket: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        self._retry("delete", self._inner.delete_objects, bucket, keys)

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(self._retry("list", lambda: list(self._inner.list_objects(bucket, prefix))))

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        return self._retry("list", self._inner.list_keys, bucket, prefix)

    def bucket_exists(self, bucket: str) -> bool:
        return self._retry("head bucket", self._inner.bucket_exists, bucket)

    def create_bucket(self, bucket: str) -> None:
        self._inner.create_bucket(bucket)

    def delete_object(self, bucket: str, key: str) -> None:
        self._retry("delete", self._inner.delete_object, bucket, key)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        return self._retry("delete", self._inner.delete_prefix, bucket, prefix)

    def close(self) -> None:
        self._inner.close()

    def worker_config(self) -> dict[str, Any]:
        return self._inner.worker_config()


def retrying_storage(inner: StorageBackend, seconds: float) -> StorageBackend:
    """``inner`` with the client's retries (``seconds`` <= 0: ``inner`` itself)."""
    return RetryingStorage(inner, seconds) if seconds > 0 else inner
