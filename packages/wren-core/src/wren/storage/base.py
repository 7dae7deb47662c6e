"""The storage contract: what a storage plugin implements.

A storage plugin gives wren a flat object store made of buckets holding objects named by keys
(``"a/b/c"``; ``/`` has no special meaning to the store, but prefixes are listed efficiently).
wren keeps everything a job needs there: the pickled function, aggregated call data, and each
call's status record and result. Users reach the same store through :class:`wren.Storage`.

Writing a storage plugin
------------------------
1. Subclass :class:`StorageBackend`, set ``name`` (the word users put in ``storage=``) and
   ``config_class`` (a dataclass; its fields are the keys of the config section named after the
   plugin, see :mod:`wren.config`), and implement every abstract method.
2. Raise :class:`wren.errors.StorageNoSuchKeyError`, :class:`StorageNoSuchBucketError` and
   :class:`StorageAuthError` for those cases, never the SDK's own exceptions, and never put a
   credential in a message.
3. Do no network I/O in ``__init__``: create SDK clients lazily (and let tests inject them).
   Instances are used from many threads at once.
4. Return the spec from a ``wren_storage_backends`` hook and declare the module under the
   ``wren`` entry-point group; run ``wren.testing.StorageBackendConformance`` against it.
"""
from __future__ import annotations

import abc
import dataclasses
import io
from typing import IO, Any, ClassVar
from collections.abc import Iterable, Iterator


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """One entry of a listing or the answer to ``head``."""

    key: str
    size: int
    last_modified: float | None = None  # seconds since the epoch
    etag: str | None = None


class StorageBackend(abc.ABC):
    """An object store. See the module docstring for the guide to writing one."""

    #: The storage's name, as users write it in ``storage=`` and as its config section.
    name: ClassVar[str]
    #: URI schemes that name objects in this storage (``"cos"`` for ``cos://bucket/key``).
    schemes: ClassVar[tuple[str, ...]] = ()
    #: The dataclass of this plugin's config section.
    config_class: ClassVar[type]
    #: True when the objects are reachable only from this machine (a local filesystem):
    #: compute backends whose workers run elsewhere refuse it with a clear error.
    local_only: ClassVar[bool] = False

    def __init__(self, config: Any):
        self.config = config

    # -- the default bucket -------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def default_bucket(self) -> str:
        """The bucket wren keeps its temporary data in (``storage_bucket`` in config)."""

    # -- objects ------------------------------------------------------------------------------
    @abc.abstractmethod
    def put_object(self, bucket: str, key: str, body: bytes | IO[bytes]) -> None:
        """Store ``body`` (bytes or a binary file object, read to its end) under ``key``.

        The write is atomic: readers see the old object or the whole new one, never a part.
        """

    @abc.abstractmethod
    def get_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> bytes:
        """Return the object's bytes, or only ``byte_range`` = (first, last), both inclusive."""

    @abc.abstractmethod
    def open_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> IO[bytes]:
        """Return a readable binary stream over the object (or its range), without reading it
        all into memory. The caller closes it."""

    @abc.abstractmethod
    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        """Return the object's metadata; :class:`StorageNoSuchKeyError` when missing."""

    @abc.abstractmethod
    def delete_objects(self, bucket: str, keys: Iterable[str]) -> None:
        """Delete every key (missing keys are not an error); batch as the service allows."""

    @abc.abstractmethod
    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix``, in key order, all pages."""

    # -- buckets ------------------------------------------------------------------------------
    @abc.abstractmethod
    def bucket_exists(self, bucket: str) -> bool:
        """Whether the bucket exists (and is reachable with these credentials)."""

    @abc.abstractmethod
    def create_bucket(self, bucket: str) -> None:
        """Create the bucket; succeed if it already exists and is ours."""

    # -- conveniences built on the abstract methods -------------------------------------------
    def delete_object(self, bucket: str, key: str) -> None:
        self.delete_objects(bucket, [key])

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        return [o.key for o in self.list_objects(bucket, prefix)]

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many there were."""
        keys = self.list_keys(bucket, prefix)
        if keys:
            self.delete_objects(bucket, keys)
        return len(keys)

    def object_exists(self, bucket: str, key: str) -> bool:
        from wren.errors import StorageNoSuchKeyError

        try:
            self.head_object(bucket, key)
        except StorageNoSuchKeyError:
            return False
        return True

    def close(self) -> None:
        """Release pooled connections. The instance may not be used afterwards."""

    def worker_config(self) -> dict[str, Any]:
        """The config section a worker needs to reach this storage (sent in the invocation,
        never stored). Defaults to every field of the config dataclass."""
        return dataclasses.asdict(self.config)


def read_range(stream: IO[bytes], byte_range: tuple[int, int] | None) -> bytes:
    """Helper for plugins: read ``byte_range`` (inclusive) from a seekable stream."""
    if byte_range is None:
        return stream.read()
    first, last = byte_range
    stream.seek(first)
    return stream.read(max(0, last - first + 1))


def as_stream(body: bytes | IO[bytes]) -> IO[bytes]:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return io.BytesIO(body)
    return body
