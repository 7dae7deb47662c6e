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
    """A reference to an object stored with :meth:`Storage.put_cloudobject`."""

    backend: str
    bucket: str
    key: str


class Storage:
    """Object storage client: ``wren.Storage()`` uses the configured storage.

    ``config`` is a config dict as for :func:`wren.function_executor`; ``backend`` names the
    storage plugin (``localhost``, ``ibm_cos``...). ``bucket`` is the default bucket.
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
        return self._backend

    @property
    def bucket(self) -> str:
        return self._backend.default_bucket

    def __repr__(self) -> str:
        return f"wren.Storage(backend={self.backend!r}, bucket={self.bucket!r})"

    # -- objects --------------------------------------------------------------------------------
    def put_object(self, bucket: str, key: str, body: bytes | str | IO[bytes]) -> None:
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
        info = self._backend.head_object(bucket, key)
        return {
            "content-length": str(info.size),
            "size": info.size,
            "last-modified": info.last_modified,
            "etag": info.etag,
        }

    def delete_object(self, bucket: str, key: str) -> None:
        self._backend.delete_object(bucket, key)

    def delete_objects(self, bucket: str, key_list: Iterable[str]) -> None:
        self._backend.delete_objects(bucket, list(key_list))

    def list_objects(self, bucket: str, prefix: str | None = None) -> list[dict[str, Any]]:
        return [
            {"Key": o.key, "Size": o.size, "LastModified": o.last_modified, "ETag": o.etag}
            for o in self._backend.list_objects(bucket, prefix or "")
        ]

    def list_keys(self, bucket: str, prefix: str | None = None) -> list[str]:
        return self._backend.list_keys(bucket, prefix or "")

    def bucket_exists(self, bucket: str) -> bool:
        return self._backend.bucket_exists(bucket)

    def create_bucket(self, bucket: str) -> None:
        self._backend.create_bucket(bucket)

    # -- cloud objects --------------------------------------------------------------------------
    def put_cloudobject(
        self, body: bytes | str | IO[bytes], bucket: str | None = None, key: str | None = None
    ) -> CloudObject:
        bucket = bucket or self.bucket
        if key is None:
            ctx = worker_context.current()
            # made by a call: it belongs to the call's executor, whose clean() removes it
            key = (f"{ctx['executor_prefix']}/{CLOUDOBJECTS}/{uuid.uuid4().hex}" if ctx and ctx.get("executor_prefix")
                   else f"wren.cloudobjects/{uuid.uuid4().hex}")
        self.put_object(bucket, key, body)
        return CloudObject(self.backend, bucket, key)

    def get_cloudobject(self, cloudobject: CloudObject, stream: bool = False) -> bytes | IO[bytes]:
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
        self.delete_object(cloudobject.bucket, cloudobject.key)

    def delete_cloudobjects(self, cloudobjects: Iterable[CloudObject]) -> None:
        """Delete several cloud objects (grouped by bucket: one request per bucket)."""
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
        """PyWren 1.x's name of :meth:`put_cloudobject`."""
        return self.put_cloudobject(body, bucket, key)

    def get_cobject(self, cloudobject: CloudObject | None = None, bucket: str | None = None, key: str | None = None,
                    stream: bool = False) -> bytes | IO[bytes]:
        """PyWren 1.x's name of :meth:`get_cloudobject` (which also took ``bucket``/``key``)."""
        if cloudobject is None:
            if not bucket or not key:
                raise InvalidInputError("get_cobject takes a cloud object, or bucket= and key=")
            return self.get_object(bucket, key, stream=stream)
        return self.get_cloudobject(cloudobject, stream=stream)

    def delete_cobject(self, cloudobject: CloudObject | None = None, bucket: str | None = None,
                       key: str | None = None) -> None:
        """PyWren 1.x's name of :meth:`delete_cloudobject`."""
        if cloudobject is not None:
            self.delete_cloudobject(cloudobject)
        elif bucket and key:
            self.delete_object(bucket, key)
        else:
            raise InvalidInputError("delete_cobject takes a cloud object, or bucket= and key=")

    def delete_cobjects(self, cloudobjects: Iterable[CloudObject]) -> None:
        """PyWren 1.x's name of :meth:`delete_cloudobjects`."""
        self.delete_cloudobjects(cloudobjects)

    # -- Lithops' file helpers ------------------------------------------------------------------
    def upload_file(self, file_name: str, bucket: str | None = None, key: str | None = None) -> None:
        """Store the local file ``file_name`` (streamed) under ``key`` (default: its name)."""
        import os

        with open(file_name, "rb") as f:
            self._backend.put_object(bucket or self.bucket, key or os.path.basename(file_name), f)

    def download_file(self, bucket: str, key: str, file_name: str | None = None) -> None:
        """Write the object to the local file ``file_name`` (default: the key's last part)."""
        import os
        import shutil

        with self._backend.open_object(bucket, key) as src, open(file_name or os.path.basename(key), "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
