"""The storage contract: what a storage plugin implements.

A storage plugin gives wren a flat object store made of buckets holding objects named by keys
(``"a/b/c"``; ``/`` has no special meaning to the store, but prefixes are listed efficiently).
wren keeps everything a job needs there: the pickled function, aggregated call data, and each
call's status record and result. Users reach the same store through :class:`wren.Storage`.
The guide with a worked example is ``docs/plugins.md``; ``help(StorageBackend)`` holds the
contract, method by method.

Writing a storage plugin
------------------------
1. Subclass :class:`StorageBackend`, set ``name`` (the word users put in ``storage=``) and
   ``config_class`` (a dataclass; its fields are the keys of the config section named after the
   plugin, see :mod:`wren.config`), and implement every abstract method. The section must have
   a ``storage_bucket`` field (wren's temporary data lives there, :attr:`default_bucket`
   returns it); credentials use :func:`wren.config.secret_field`. Checks across fields go in
   the dataclass's ``validate(self)``, raising :class:`wren.errors.ConfigError` that names the
   key and the fix; it runs when the section is parsed, before anything is sent.
2. Raise :class:`wren.errors.StorageNoSuchKeyError`, :class:`StorageNoSuchBucketError` and
   :class:`StorageAuthError` for those cases, any other failure as :class:`StorageError`,
   never the SDK's own exceptions, and never put a credential in a message.
3. Do no network I/O in ``__init__``: create SDK clients lazily (and let tests inject them).
   Instances are used from many threads at once: every method must be thread-safe.
4. Return the spec from a ``wren_storage_backends`` hook and declare the module under the
   ``wren`` entry-point group; run ``wren.testing.StorageBackendConformance`` against it.

Buckets: wren never creates one. The user creates the default bucket (``storage_bucket``) once,
e.g. ``wren.Storage().create_bucket(wren.Storage().bucket)``, and an error from a missing
bucket says so. Only a storage whose ``put_object`` creates missing buckets by nature (the
local filesystem) sets ``creates_bucket_on_put = True``; the conformance suite checks that
``put_object`` into a missing bucket does exactly what that attribute says.
"""
from __future__ import annotations

import abc
import dataclasses
import io
from typing import IO, Any, ClassVar
from collections.abc import Iterable, Iterator


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """One entry of a listing or the answer to ``head``.

    :param key: the object's key.
    :param size: its size in bytes.
    :param last_modified: when it was last written, in seconds since the epoch (None when unknown).
    :param etag: the service's entity tag (None when it has none).
    """

    key: str
    size: int
    last_modified: float | None = None  # seconds since the epoch
    etag: str | None = None


class StorageBackend(abc.ABC):
    """An object store. See ``help(wren.storage.base)`` (the module) for the guide.

    Class attributes a storage may set:

    ``name`` (str, required)
        The word users write in ``storage=`` and the name of its config section; equal to the
        name in its :class:`wren.StorageBackendSpec`.
    ``config_class`` (dataclass)
        Documentation of the section's dataclass; wren uses the **spec's** ``config_class``
        (``StorageBackendSpec(name, cls, config_class)``), so keep the two the same. Workers
        rebuild it from :meth:`worker_config` (``config_class(**worker_config())``).
    ``schemes`` (tuple of str, default ``()``)
        URI schemes naming objects in this store (``("cos",)`` for ``cos://bucket/key`` in
        ``iterdata``).
    ``local_only`` (bool, default False)
        The objects are reachable from this machine only; compute backends whose workers run
        elsewhere refuse the storage with a clear error.
    ``creates_bucket_on_put`` (bool, default False)
        False: ``put_object`` into a missing bucket raises :class:`StorageNoSuchBucketError`.
        True: it creates the bucket (local folders do). The conformance suite checks it.

    Keys are case-sensitive byte-exact strings: any Unicode, spaces, and characters that mean
    something to SQL ``LIKE``, globs or regular expressions (``_ % * [ ? .``) are plain
    characters in keys and prefixes. Errors: a missing key raises
    :class:`~wren.errors.StorageNoSuchKeyError`; any operation on a missing bucket (get,
    head, open, list, delete) raises :class:`~wren.errors.StorageNoSuchBucketError`.
    """

    #: The storage's name, as users write it in ``storage=`` and as its config section.
    name: ClassVar[str]
    #: URI schemes that name objects in this storage (``"cos"`` for ``cos://bucket/key``).
    schemes: ClassVar[tuple[str, ...]] = ()
    #: The dataclass of this plugin's config section (wren uses the spec's; keep them equal).
    config_class: ClassVar[type]
    #: True when the objects are reachable only from this machine (a local filesystem):
    #: compute backends whose workers run elsewhere refuse it with a clear error.
    local_only: ClassVar[bool] = False
    #: True when ``put_object`` into a missing bucket creates it; False: it raises
    #: :class:`wren.errors.StorageNoSuchBucketError`.
    creates_bucket_on_put: ClassVar[bool] = False

    def __init__(self, config: Any):
        self.config = config

    # -- the default bucket -------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def default_bucket(self) -> str:
        """The bucket wren keeps its temporary data in: the ``storage_bucket`` key of the
        plugin's config section. wren does not create it (see the module docstring)."""

    # -- objects ------------------------------------------------------------------------------
    @abc.abstractmethod
    def put_object(self, bucket: str, key: str, body: bytes | IO[bytes]) -> None:
        """Store ``body`` (bytes or a binary file object, read to its end) under ``key``,
        replacing any object there. Empty bodies are objects too.

        The write is atomic: readers see the old object or the whole new one, never a part,
        and of concurrent writers to one key exactly one whole body wins. A missing bucket
        raises :class:`StorageNoSuchBucketError`, unless ``creates_bucket_on_put``.
        """

    @abc.abstractmethod
    def get_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> bytes:
        """Return the object's bytes, or only ``byte_range`` = (first, last), both inclusive.

        A range reaching past the end is cut at the end; a range starting at or past the end
        (or on an empty object) gives ``b""``. Missing key: :class:`StorageNoSuchKeyError`;
        missing bucket: :class:`StorageNoSuchBucketError`."""

    @abc.abstractmethod
    def open_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> IO[bytes]:
        """Return a readable binary stream over the object (or its range), without reading it
        all into memory. The caller closes it. ``bucket``, ``key`` and ``byte_range`` (first,
        last; inclusive) as for :meth:`get_object`, and so are the errors."""

    @abc.abstractmethod
    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        """Return the metadata of the object ``key`` of ``bucket`` as an :class:`ObjectInfo`;
        :class:`StorageNoSuchKeyError` when missing."""

    @abc.abstractmethod
    def delete_objects(self, bucket: str, keys: Iterable[str]) -> None:
        """Delete every key (missing keys are not an error); batch as the service allows.
        A missing bucket raises :class:`StorageNoSuchBucketError` (for a non-empty ``keys``)."""

    @abc.abstractmethod
    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix`` (a plain, case-sensitive
        string: no wildcard of any kind), in key order, across every page of the service (a
        listing of 1,000 or 10,000+ keys is whole). A missing bucket raises
        :class:`StorageNoSuchBucketError`, never an empty listing."""

    # -- buckets ------------------------------------------------------------------------------
    @abc.abstractmethod
    def bucket_exists(self, bucket: str) -> bool:
        """Whether the bucket exists (and is reachable with these credentials)."""

    @abc.abstractmethod
    def create_bucket(self, bucket: str) -> None:
        """Create the bucket; succeed if it already exists and is ours."""

    # -- conveniences built on the abstract methods -------------------------------------------
    def delete_object(self, bucket: str, key: str) -> None:
        """Delete the object ``key`` of ``bucket`` (a missing key is not an error), through
        :meth:`delete_objects`."""
        self.delete_objects(bucket, [key])

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The keys of every object of ``bucket`` whose key starts with ``prefix`` (default: every
        object), in key order, from :meth:`list_objects` (and with its errors)."""
        return [o.key for o in self.list_objects(bucket, prefix)]

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object of ``bucket`` under ``prefix``; returns how many there were."""
        keys = self.list_keys(bucket, prefix)
        if keys:
            self.delete_objects(bucket, keys)
        return len(keys)

    def object_exists(self, bucket: str, key: str) -> bool:
        """Whether the object ``key`` of ``bucket`` exists (:meth:`head_object` does not raise
        :class:`StorageNoSuchKeyError`; its other errors propagate)."""
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
