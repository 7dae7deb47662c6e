"""The storage conformance suite."""
from __future__ import annotations

import concurrent.futures
import io
import os
import uuid

import pytest

from wren.errors import StorageNoSuchBucketError, StorageNoSuchKeyError
from wren.storage.base import StorageBackend


class StorageBackendConformance:
    """Every storage plugin must pass these. Provide ``storage_backend`` and ``bucket``."""

    @pytest.fixture
    def prefix(self) -> str:
        return f"conformance/{uuid.uuid4().hex[:10]}/"

    def test_is_a_storage_backend(self, storage_backend: StorageBackend) -> None:
        assert isinstance(storage_backend, StorageBackend)
        assert isinstance(storage_backend.name, str) and storage_backend.name
        assert isinstance(storage_backend.default_bucket, str) and storage_backend.default_bucket

    def test_put_get_roundtrip(self, storage_backend, bucket, prefix) -> None:
        body = os.urandom(1000)
        storage_backend.put_object(bucket, prefix + "obj", body)
        assert storage_backend.get_object(bucket, prefix + "obj") == body

    def test_put_from_stream(self, storage_backend, bucket, prefix) -> None:
        body = os.urandom(300_000)
        storage_backend.put_object(bucket, prefix + "stream", io.BytesIO(body))
        assert storage_backend.get_object(bucket, prefix + "stream") == body

    def test_empty_object(self, storage_backend, bucket, prefix) -> None:
        storage_backend.put_object(bucket, prefix + "empty", b"")
        assert storage_backend.get_object(bucket, prefix + "empty") == b""
        assert storage_backend.head_object(bucket, prefix + "empty").size == 0

    def test_overwrite_replaces(self, storage_backend, bucket, prefix) -> None:
        storage_backend.put_object(bucket, prefix + "o", b"first version")
        storage_backend.put_object(bucket, prefix + "o", b"second")
        assert storage_backend.get_object(bucket, prefix + "o") == b"second"

    def test_byte_ranges(self, storage_backend, bucket, prefix) -> None:
        body = bytes(range(256)) * 4
        storage_backend.put_object(bucket, prefix + "r", body)
        assert storage_backend.get_object(bucket, prefix + "r", (0, 0)) == body[:1]
        assert storage_backend.get_object(bucket, prefix + "r", (10, 19)) == body[10:20]
        assert storage_backend.get_object(bucket, prefix + "r", (1000, 1023)) == body[1000:]

    def test_open_object_streams_a_range(self, storage_backend, bucket, prefix) -> None:
        body = os.urandom(100_000)
        storage_backend.put_object(bucket, prefix + "s", body)
        with storage_backend.open_object(bucket, prefix + "s", (5000, 59_999)) as f:
            got = b"".join(iter(lambda: f.read(7000), b""))
        assert got == body[5000:60_000]
        with storage_backend.open_object(bucket, prefix + "s") as f:
            assert f.read() == body

    def test_head(self, storage_backend, bucket, prefix) -> None:
        storage_backend.put_object(bucket, prefix + "h", b"12345")
        info = storage_backend.head_object(bucket, prefix + "h")
        assert info.key == prefix + "h" and info.size == 5

    def test_missing_key(self, storage_backend, bucket, prefix) -> None:
        with pytest.raises(StorageNoSuchKeyError):
            storage_backend.get_object(bucket, prefix + "nope")
        with pytest.raises(StorageNoSuchKeyError):
            storage_backend.head_object(bucket, prefix + "nope")
        with pytest.raises(StorageNoSuchKeyError):
            storage_backend.open_object(bucket, prefix + "nope").read()
        assert storage_backend.object_exists(bucket, prefix + "nope") is False

    def test_missing_bucket(self, storage_backend) -> None:
        missing = f"wren-missing-{uuid.uuid4().hex[:12]}"
        assert storage_backend.bucket_exists(missing) is False
        with pytest.raises(StorageNoSuchBucketError):
            storage_backend.get_object(missing, "k")
        with pytest.raises(StorageNoSuchBucketError):
            list(storage_backend.list_objects(missing, ""))

    def test_list_prefix_sorted(self, storage_backend, bucket, prefix) -> None:
        keys = [prefix + k for k in ("b/2", "a/1", "a/10", "c", "ab")]
        for k in keys:
            storage_backend.put_object(bucket, k, k.encode())
        assert storage_backend.list_keys(bucket, prefix) == sorted(keys)
        assert storage_backend.list_keys(bucket, prefix + "a/") == [prefix + "a/1", prefix + "a/10"]
        assert storage_backend.list_keys(bucket, prefix + "a") == [prefix + "a/1", prefix + "a/10", prefix + "ab"]
        sizes = {o.key: o.size for o in storage_backend.list_objects(bucket, prefix)}
        assert sizes[prefix + "c"] == len((prefix + "c").encode())
        assert storage_backend.list_keys(bucket, prefix + "zzz") == []

    def test_delete(self, storage_backend, bucket, prefix) -> None:
        keys = [f"{prefix}d/{i:04d}" for i in range(25)]
        for k in keys:
            storage_backend.put_object(bucket, k, b"x")
        storage_backend.delete_objects(bucket, keys[:20] + [prefix + "never-existed"])
        assert storage_backend.list_keys(bucket, prefix + "d/") == keys[20:]
        storage_backend.delete_object(bucket, keys[20])
        assert storage_backend.delete_prefix(bucket, prefix) == 4
        assert storage_backend.list_keys(bucket, prefix) == []

    def test_concurrent_writers(self, storage_backend, bucket, prefix) -> None:
        def write(i: int) -> None:
            storage_backend.put_object(bucket, f"{prefix}c/{i:03d}", str(i).encode() * 100)
            storage_backend.put_object(bucket, f"{prefix}same", str(i).encode() * 1000)

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(write, range(64)))
        assert len(storage_backend.list_keys(bucket, prefix + "c/")) == 64
        same = storage_backend.get_object(bucket, prefix + "same")
        digit = same[: len(same) // 1000]
        assert same == digit * 1000  # one whole write, never a mix

    def test_large_object(self, storage_backend, bucket, prefix) -> None:
        body = os.urandom(12 * 1024 * 1024)
        storage_backend.put_object(bucket, prefix + "big", io.BytesIO(body))
        assert storage_backend.head_object(bucket, prefix + "big").size == len(body)
        assert storage_backend.get_object(bucket, prefix + "big", (len(body) - 10, len(body) - 1)) == body[-10:]
