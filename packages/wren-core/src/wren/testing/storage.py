"""The storage conformance suite: the contract of :mod:`wren.storage.base` (see
``docs/plugins.md``, section 5), including what storage authors commonly get wrong: prefixes
with characters special to SQL ``LIKE``, globs and regexes, pagination past 1,000 and 10,000
keys, case sensitivity, missing buckets, ranges at and past the end, empty objects, keys with
spaces and Unicode, concurrent writers, and whether ``put_object`` creates buckets.

The 10,000-key listing is marked ``slow`` (register the marker in your pytest config)."""
from __future__ import annotations

import concurrent.futures
import io
import os
import threading
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
        assert storage_backend.get_object(bucket, prefix + "empty", (0, 9)) == b""
        with storage_backend.open_object(bucket, prefix + "empty") as f:
            assert f.read() == b""
        storage_backend.put_object(bucket, prefix + "empty-stream", io.BytesIO(b""))
        listed = {o.key: o.size for o in storage_backend.list_objects(bucket, prefix)}
        assert listed == {prefix + "empty": 0, prefix + "empty-stream": 0}

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

    def test_ranges_at_and_past_the_end(self, storage_backend, bucket, prefix) -> None:
        body = bytes(range(100))
        storage_backend.put_object(bucket, prefix + "r", body)
        cases = [((99, 99), body[99:]), ((90, 150), body[90:]), ((0, 10_000), body),
                 ((100, 100), b""), ((100, 200), b""), ((5_000, 6_000), b"")]
        for byte_range, expected in cases:
            assert storage_backend.get_object(bucket, prefix + "r", byte_range) == expected, byte_range
            with storage_backend.open_object(bucket, prefix + "r", byte_range) as f:
                assert f.read() == expected, byte_range

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
            storage_backend.head_object(missing, "k")
        with pytest.raises(StorageNoSuchBucketError):
            storage_backend.open_object(missing, "k").read()
        with pytest.raises(StorageNoSuchBucketError):
            list(storage_backend.list_objects(missing, ""))
        with pytest.raises(StorageNoSuchBucketError):
            storage_backend.list_keys(missing, "some/prefix/")

    def test_delete_in_missing_bucket(self, storage_backend) -> None:
        missing = f"wren-missing-{uuid.uuid4().hex[:12]}"
        with pytest.raises(StorageNoSuchBucketError):
            storage_backend.delete_objects(missing, ["k", "other/k"])
        with pytest.raises(StorageNoSuchBucketError):
            storage_backend.delete_object(missing, "k")
        assert storage_backend.bucket_exists(missing) is False

    def test_put_into_missing_bucket_follows_creates_bucket_on_put(self, storage_backend) -> None:
        missing = f"wren-missing-{uuid.uuid4().hex[:12]}"
        if storage_backend.creates_bucket_on_put:
            storage_backend.put_object(missing, "k", b"made the bucket")
            assert storage_backend.bucket_exists(missing) is True
            assert storage_backend.get_object(missing, "k") == b"made the bucket"
            storage_backend.delete_object(missing, "k")
        else:
            with pytest.raises(StorageNoSuchBucketError):
                storage_backend.put_object(missing, "k", b"must not create the bucket")
            assert storage_backend.bucket_exists(missing) is False

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

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(write, range(64)))
        assert len(storage_backend.list_keys(bucket, prefix + "c/")) == 64

    def test_concurrent_writers_to_one_key(self, storage_backend, bucket, prefix) -> None:
        """Of concurrent writers to one key, readers only ever see one whole body."""
        key = prefix + "same"
        base = 50_000

        def body(i: int) -> bytes:  # a distinct length per writer: a mix or a cut shows
            return bytes([65 + i % 26]) * (base + i)

        def whole(data: bytes) -> bool:
            i = len(data) - base
            return 0 <= i < 64 and data == body(i)

        storage_backend.put_object(bucket, key, body(0))
        done = threading.Event()
        seen_bad: list[int] = []

        def read() -> None:
            while not done.is_set():
                data = storage_backend.get_object(bucket, key)
                if not whole(data):
                    seen_bad.append(len(data))

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            readers = [pool.submit(read) for _ in range(4)]
            try:
                list(pool.map(lambda i: storage_backend.put_object(bucket, key, body(i)), range(1, 64)))
            finally:
                done.set()
            for r in readers:
                r.result()
        assert not seen_bad, f"readers saw {len(seen_bad)} partial or mixed bodies (sizes {seen_bad[:5]})"
        assert whole(storage_backend.get_object(bucket, key))
        assert storage_backend.list_keys(bucket, prefix) == [key]

    # -- keys and prefixes are plain, exact strings ---------------------------------------------
    def test_prefix_is_plain_text_not_a_pattern(self, storage_backend, bucket, prefix) -> None:
        """``_ % * [ ? .`` in a prefix mean themselves (not SQL LIKE, glob or regex)."""
        names = ["a_c/1", "abc/1", "a%c/1", "axyc/1", "a*c/1", "ac/1", "a[c]/1", "a?c/1", "a.c/1"]
        for n in names:
            storage_backend.put_object(bucket, prefix + n, b"x")
        for probe, expected in [
            ("a_", ["a_c/1"]), ("a%", ["a%c/1"]), ("a*", ["a*c/1"]), ("a[", ["a[c]/1"]),
            ("a[c]", ["a[c]/1"]), ("a?", ["a?c/1"]), ("a.", ["a.c/1"]),
            ("a_c/", ["a_c/1"]), ("ab", ["abc/1"]),
        ]:
            got = storage_backend.list_keys(bucket, prefix + probe)
            assert got == [prefix + e for e in expected], f"list_keys(prefix + {probe!r}) gave {got}"
        assert storage_backend.list_keys(bucket, prefix) == sorted(prefix + n for n in names)

    def test_keys_are_case_sensitive(self, storage_backend, bucket, prefix) -> None:
        storage_backend.put_object(bucket, prefix + "Case/a", b"upper")
        storage_backend.put_object(bucket, prefix + "case/b", b"lower")
        storage_backend.put_object(bucket, prefix + "CASE", b"all upper")
        with pytest.raises(StorageNoSuchKeyError):
            storage_backend.get_object(bucket, prefix + "case/a")
        assert storage_backend.object_exists(bucket, prefix + "CASE/a") is False
        assert storage_backend.get_object(bucket, prefix + "Case/a") == b"upper"
        assert storage_backend.list_keys(bucket, prefix + "case") == [prefix + "case/b"]
        assert storage_backend.list_keys(bucket, prefix + "C") == [prefix + "CASE", prefix + "Case/a"]

    def test_keys_with_spaces_and_unicode(self, storage_backend, bucket, prefix) -> None:
        keys = [prefix + k for k in ("with space/file name.txt", "ünïcødé/雪 😀", "plus+sign", "per%20cent", "tab\tand~tilde")]
        for i, k in enumerate(keys):
            storage_backend.put_object(bucket, k, str(i).encode())
        for i, k in enumerate(keys):
            assert storage_backend.get_object(bucket, k) == str(i).encode()
            assert storage_backend.head_object(bucket, k).size == len(str(i))
        assert storage_backend.list_keys(bucket, prefix) == sorted(keys)
        assert storage_backend.list_keys(bucket, prefix + "ünïcødé/") == [prefix + "ünïcødé/雪 😀"]
        storage_backend.delete_objects(bucket, keys[:2])
        assert storage_backend.list_keys(bucket, prefix) == sorted(keys[2:])

    # -- pagination -----------------------------------------------------------------------------
    def _fill(self, storage_backend: StorageBackend, bucket: str, keys: list[str]) -> None:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: storage_backend.put_object(bucket, k, b""), keys))

    def test_listing_over_1000_keys(self, storage_backend, bucket, prefix) -> None:
        keys = [f"{prefix}p/{i:05d}" for i in range(1005)]
        self._fill(storage_backend, bucket, keys)
        assert storage_backend.list_keys(bucket, prefix + "p/") == keys
        assert storage_backend.delete_prefix(bucket, prefix) == 1005
        assert storage_backend.list_keys(bucket, prefix) == []

    @pytest.mark.slow
    def test_listing_over_10000_keys(self, storage_backend, bucket, prefix) -> None:
        keys = [f"{prefix}p/{i:05d}" for i in range(10_003)]
        self._fill(storage_backend, bucket, keys)
        assert storage_backend.list_keys(bucket, prefix + "p/") == keys
        assert storage_backend.delete_prefix(bucket, prefix) == 10_003

    def test_large_object(self, storage_backend, bucket, prefix) -> None:
        body = os.urandom(12 * 1024 * 1024)
        storage_backend.put_object(bucket, prefix + "big", io.BytesIO(body))
        assert storage_backend.head_object(bucket, prefix + "big").size == len(body)
        assert storage_backend.get_object(bucket, prefix + "big", (len(body) - 10, len(body) - 1)) == body[-10:]
