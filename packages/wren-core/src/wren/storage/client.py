"""``wren.Storage``: the user's client on the same storage the executor uses.

Method names follow PyWren for IBM Cloud and Lithops, so existing code keeps working.
"""
from __future__ import annotations

import dataclasses
import uuid
from typing import IO, Any
from collections.abc import Iterable, Mapping

from wren.config import Config, load_config, parse_section
from wren.errors import InvalidInputError
from wren.storage.base import StorageBackend
from wren.storage.ranges import parse_range_header
from wren.worker import context as worker_context

#: Where the cloud objects calls make live, under their executor's prefix.
CLOUDOBJECTS = "cloudobjects"


def build_storage(config: Config, name: str | None = None) -> StorageBackend:
    """Instantiate the storage plugin ``name`` (default: ``config.wren.storage``)."""
    from wren.plugins import get_registry

    name = name or config.wren.storage
    spec = get_registry().get("storage", name)
    section = parse_section(spec.config_class, name, config.section(name)) if spec.config_class else None
    return spec.backend_class(section)


@dataclasses.dataclass(frozen=True)
class CloudObject:
    """A reference to an object stored with :meth:`Storage.put_cloudobject`.

    :param backend: the name of the storage plugin holding it (``localhost``, ``ibm_cos``...).
    :param bucket: its bucket.
    :param key: its key in that bucket.
    """

    backend: str
    bucket: str
    key: str


class Storage:
    """Object storage client: ``wren.Storage()`` uses the configured storage.

    ``config`` is a config dict as for :func:`wren.function_executor`; ``backend`` names the
    storage plugin (``localhost``, ``ibm_cos``...). ``bucket`` is the default bucket.

    :param config: a config dict or :class:`~wren.config.Config` (default: the config file and
        environment, as an executor reads them).
    :param backend: the storage plugin's name (default: the config's ``wren.storage``).
    :param storage_backend: an already built :class:`~wren.storage.base.StorageBackend` to wrap
        (keyword only; ``config`` and ``backend`` are then ignored).
    """

    def __init__(
        self,
        config: Mapping[str, Any] | Config | None = None,
        backend: str | None = None,
        *,
        storage_backend: StorageBackend | None = None,
    ):
        if storage_backend is not None:
            self._backend = storage_backend
        else:
            cfg = config if isinstance(config, Config) else load_config(config)
            self._backend = build_storage(cfg, backend)
        self.backend = self._backend.name

    @property
    def storage_backend(self) -> StorageBackend:
        """The :class:`~wren.storage.base.StorageBackend` plugin instance this client talks to."""
        return self._backend

    @property
    def bucket(self) -> str:
        """The default bucket: the one the executor keeps its data in (the plugin's ``storage_bucket``)."""
        return self._backend.default_bucket

    def __repr__(self) -> str:
        return f"wren.Storage(backend={self.backend!r}, bucket={self.bucket!r})"

    # -- objects --------------------------------------------------------------------------------
    def put_object(self, bucket: str, key: str, body: bytes | str | IO[bytes]) -> None:
        """Store ``body`` under ``key`` in ``bucket``, replacing any object there.

        :param bucket: the bucket (see :attr:`bucket` for the default one).
        :param key: the object's key.
        :param body: bytes (bytearray and memoryview too), a str (stored UTF-8 encoded) or a
            binary file object (streamed to its end).
        :raises InvalidInputError: for any other type of ``body`` (pickle other values first).
        """
        if isinstance(body, str):
            body = body.encode()
        elif isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        elif not isinstance(body, bytes) and not callable(getattr(body, "read", None)):
            raise InvalidInputError(
                f"put_object's body must be bytes, str or a binary file object, got {type(body).__name__}; "
                "pickle other values first (or use put_cloudobject with bytes)"
            )
        self._backend.put_object(bucket, key, body)

    def get_object(
        self,
        bucket: str,
        key: str,
        stream: bool = False,
        extra_get_args: Mapping[str, Any] | None = None,
    ) -> bytes | IO[bytes]:
        """The object's bytes, or a stream when ``stream=True``.

        ``extra_get_args={'Range': 'bytes=0-99'}`` reads only that (inclusive) range.

        :param bucket: the object's bucket.
        :param key: the object's key.
        :param stream: return a readable binary file object (the caller closes it) instead of bytes.
        :param extra_get_args: S3-style extra arguments; only ``Range`` (an HTTP byte range such as
            ``bytes=0-99``, ``bytes=100-`` or ``bytes=-100``) is supported.
        :raises InvalidInputError: for any other key of ``extra_get_args``.
        :raises StorageNoSuchKeyError: when the object does not exist.
        """
        byte_range = None
        extra = dict(extra_get_args or {})
        rng = extra.pop("Range", None)
        if extra:
            raise InvalidInputError(
                f"unsupported extra_get_args {sorted(extra)}; only 'Range' is supported"
            )
        if rng is not None:
            size = None
            if rng.strip().startswith("bytes=-") or rng.strip().endswith("-"):
                size = self._backend.head_object(bucket, key).size
            byte_range = parse_range_header(rng, size)
        if stream:
            return self._backend.open_object(bucket, key, byte_range)
        return self._backend.get_object(bucket, key, byte_range)

    def head_object(self, bucket: str, key: str) -> dict[str, Any]:
        """The object's metadata, without its content.

        :param bucket: the object's bucket.
        :param key: the object's key.
        :returns: a dict with ``content-length`` (the size as a str, as S3 answers), ``size`` (bytes,
            an int), ``last-modified`` (seconds since the epoch, or None) and ``etag``.
        :raises StorageNoSuchKeyError: when the object does not exist.
        """
        info = self._backend.head_object(bucket, key)
        return {
            "content-length": str(info.size),
            "size": info.size,
            "last-modified": info.last_modified,
            "etag": info.etag,
        }

    def delete_object(self, bucket: str, key: str) -> None:
        """Delete the object ``key`` of ``bucket``; a missing object is not an error.

        :param bucket: the object's bucket.
        :param key: the object's key.
        """
        self._backend.delete_object(bucket, key)

    def delete_objects(self, bucket: str, key_list: Iterable[str]) -> None:
        """Delete several objects of one bucket (batched as the service allows); missing keys are not an error.

        :param bucket: their bucket.
        :param key_list: their keys.
        """
        self._backend.delete_objects(bucket, list(key_list))

    def list_objects(self, bucket: str, prefix: str | None = None) -> list[dict[str, Any]]:
        """Every object of ``bucket`` whose key starts with ``prefix``, in S3's listing shape.

        :param bucket: the bucket to list.
        :param prefix: a plain, case-sensitive key prefix (default: every object).
        :returns: one dict per object with ``Key``, ``Size`` (bytes), ``LastModified`` (seconds since
            the epoch, or None) and ``ETag``.
        :raises StorageNoSuchBucketError: when the bucket does not exist.
        """
        return [
            {"Key": o.key, "Size": o.size, "LastModified": o.last_modified, "ETag": o.etag}
            for o in self._backend.list_objects(bucket, prefix or "")
        ]

    def list_keys(self, bucket: str, prefix: str | None = None) -> list[str]:
        """The keys of every object of ``bucket`` whose key starts with ``prefix``.

        :param bucket: the bucket to list.
        :param prefix: a plain, case-sensitive key prefix (default: every object).
        :raises StorageNoSuchBucketError: when the bucket does not exist.
        """
        return self._backend.list_keys(bucket, prefix or "")

    def bucket_exists(self, bucket: str) -> bool:
        """Whether ``bucket`` exists (and is reachable with these credentials).

        :param bucket: the bucket's name.
        """
        return self._backend.bucket_exists(bucket)

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket``; succeeds when it already exists and is ours.

        :param bucket: the bucket's name.
        """
        self._backend.create_bucket(bucket)

    # -- cloud objects --------------------------------------------------------------------------
    def put_cloudobject(
        self, body: bytes | str | IO[bytes], bucket: str | None = None, key: str | None = None
    ) -> CloudObject:
        """Store ``body`` and return a :class:`CloudObject` referring to it (which calls can take as input).

        :param body: bytes, a str or a binary file object, as for :meth:`put_object`.
        :param bucket: the bucket (default: :attr:`bucket`).
        :param key: the key (default: a new unique key; made by a call, it lives under its
            executor's prefix, so that executor's ``clean()`` removes it).
        :raises InvalidInputError: for a ``body`` of another type.
        """
        bucket = bucket or self.bucket
        if key is None:
            ctx = worker_context.current()
            # made by a call: it belongs to the call's executor, whose clean() removes it
            key = (f"{ctx['executor_prefix']}/{CLOUDOBJECTS}/{uuid.uuid4().hex}" if ctx and ctx.get("executor_prefix")
                   else f"wren.cloudobjects/{uuid.uuid4().hex}")
        self.put_object(bucket, key, body)
        return CloudObject(self.backend, bucket, key)

    def get_cloudobject(self, cloudobject: CloudObject, stream: bool = False) -> bytes | IO[bytes]:
        """The content of a cloud object: its bytes, or a stream when ``stream=True``.

        :param cloudobject: the :class:`CloudObject` :meth:`put_cloudobject` returned.
        :param stream: return a readable binary file object (the caller closes it) instead of bytes.
        :raises InvalidInputError: when ``cloudobject`` is not a :class:`CloudObject`, or lives in
            another storage than this client's.
        """
        if not isinstance(cloudobject, CloudObject):
            raise InvalidInputError(
                f"get_cloudobject takes the CloudObject that put_cloudobject returned, "
                f"got {type(cloudobject).__name__}"
            )
        if cloudobject.backend != self.backend:
            raise InvalidInputError(
                f"this cloud object lives in storage {cloudobject.backend!r}, but this client "
                f"uses {self.backend!r}: open wren.Storage(backend={cloudobject.backend!r})"
            )
        return self.get_object(cloudobject.bucket, cloudobject.key, stream=stream)

    def delete_cloudobject(self, cloudobject: CloudObject) -> None:
        """Delete a cloud object's content; a missing object is not an error.

        :param cloudobject: the :class:`CloudObject` :meth:`put_cloudobject` returned.
        """
        self.delete_object(cloudobject.bucket, cloudobject.key)

    def delete_cloudobjects(self, cloudobjects: Iterable[CloudObject]) -> None:
        """Delete several cloud objects (grouped by bucket: one request per bucket).

        :param cloudobjects: the :class:`CloudObject` instances to delete.
        """
        by_bucket: dict[str, list[str]] = {}
        for co in cloudobjects:
            by_bucket.setdefault(co.bucket, []).append(co.key)
        for bucket, keys in by_bucket.items():
            self.delete_objects(bucket, keys)

    def head_bucket(self, bucket: str) -> dict[str, Any]:
        """Whether ``bucket`` exists (as Lithops: a 200 answer, or an error when it does not)."""
        from wren.errors import StorageNoSuchBucketError

        if not self._backend.bucket_exists(bucket):
            raise StorageNoSuchBucketError(f"bucket {bucket!r} does not exist in storage {self.backend!r}")
        return {"ResponseMetadata": {"HTTPStatusCode": 200}, "bucket": bucket}

    # -- PyWren for IBM Cloud 1.x names ---------------------------------------------------------
    def put_cobject(self, body: bytes | str | IO[bytes], bucket: str | None = None, key: str | None = None) -> CloudObject:
        """PyWren 1.x's name of :meth:`put_cloudobject` (same ``body``, ``bucket`` and ``key``)."""
        return self.put_cloudobject(body, bucket, key)

    def get_cobject(self, cloudobject: CloudObject | None = None, bucket: str | None = None, key: str | None = None,
                    stream: bool = False) -> bytes | IO[bytes]:
        """PyWren 1.x's name of :meth:`get_cloudobject` (which also took ``bucket``/``key``).

        :param cloudobject: the cloud object to read; or else
        :param bucket: and ``key``, the object to read.
        :param key: the object's key (with ``bucket``).
        :param stream: return a readable binary file object instead of bytes.
        :raises InvalidInputError: when neither a cloud object nor both ``bucket`` and ``key`` are given.
        """
        if cloudobject is None:
            if not bucket or not key:
                raise InvalidInputError("get_cobject takes a cloud object, or bucket= and key=")
            return self.get_object(bucket, key, stream=stream)
        return self.get_cloudobject(cloudobject, stream=stream)

    def delete_cobject(self, cloudobject: CloudObject | None = None, bucket: str | None = None,
                       key: str | None = None) -> None:
        """PyWren 1.x's name of :meth:`delete_cloudobject`: deletes ``cloudobject``, or else the
        object ``key`` of ``bucket``.

        :raises InvalidInputError: when neither a cloud object nor both ``bucket`` and ``key`` are given.
        """
        if cloudobject is not None:
            self.delete_cloudobject(cloudobject)
        elif bucket and key:
            self.delete_object(bucket, key)
        else:
            raise InvalidInputError("delete_cobject takes a cloud object, or bucket= and key=")

    def delete_cobjects(self, cloudobjects: Iterable[CloudObject]) -> None:
        """PyWren 1.x's name of :meth:`delete_cloudobjects` (same ``cloudobjects``)."""
        self.delete_cloudobjects(cloudobjects)

    # -- Lithops' file helpers ------------------------------------------------------------------
    def upload_file(self, file_name: str, bucket: str | None = None, key: str | None = None) -> None:
        """Store the local file ``file_name`` (streamed) under ``key`` (default: its name) in
        ``bucket`` (default: :attr:`bucket`)."""
        import os

        with open(file_name, "rb") as f:
            self._backend.put_object(bucket or self.bucket, key or os.path.basename(file_name), f)

    def download_file(self, bucket: str, key: str, file_name: str | None = None) -> None:
        """Write the object ``key`` of ``bucket`` to the local file ``file_name`` (default: the key's
        last part, in the current directory), streamed."""
        import os
        import shutil

        with self._backend.open_object(bucket, key) as src, open(file_name or os.path.basename(key), "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
