"""The storage conformance suite catches plausible storage bugs: each check below is run against
a LocalStorage with one deliberate bug and must fail (the same checks pass against the real
LocalStorage in test_conformance.py, and against wren-storage-cos in its own tests)."""
from __future__ import annotations

import fnmatch
import io
import os
import re
import shutil
import urllib.parse
import uuid

import pytest

from wren.errors import StorageError, StorageNoSuchBucketError
from wren.localconfig import LocalhostConfig
from wren.storage.base import ObjectInfo
from wren.storage.local import LocalStorage
from wren.testing import StorageBackendConformance


class _Filtering(LocalStorage):
    """Lists the whole bucket and filters with :meth:`matches` (how SQL/glob-backed stores go wrong)."""

    def matches(self, key: str, prefix: str) -> bool:
        raise NotImplementedError

    def list_objects(self, bucket, prefix=""):
        for o in super().list_objects(bucket, ""):
            if self.matches(o.key, prefix):
                yield o


class LikeStorage(_Filtering):
    """``WHERE key LIKE prefix || '%'`` without escaping ``_`` and ``%``."""

    def matches(self, key, prefix):
        pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in prefix)
        return re.match(pattern, key, re.S) is not None


class GlobStorage(_Filtering):
    """``fnmatch(key, prefix + '*')``."""

    def matches(self, key, prefix):
        return fnmatch.fnmatchcase(key, prefix + "*")


class RegexStorage(_Filtering):
    """``re.match(prefix, key)``."""

    def matches(self, key, prefix):
        return re.match(prefix, key) is not None


class OnePageStorage(LocalStorage):
    """Returns the first page of a listing only (1,000 keys, like one S3 ListObjects call)."""

    page = 1000

    def list_objects(self, bucket, prefix=""):
        for i, o in enumerate(super().list_objects(bucket, prefix)):
            if i >= self.page:
                return
            yield o


class TenThousandStorage(OnePageStorage):
    """Follows pages up to a hard limit of 10,000 keys."""

    page = 10_000


class CaseFoldingStorage(LocalStorage):
    """Treats keys case-insensitively (a case-insensitive filesystem or index)."""

    def _path(self, bucket, key):
        return super()._path(bucket, key.lower() if isinstance(key, str) else key)

    def list_objects(self, bucket, prefix=""):
        yield from super().list_objects(bucket, prefix.lower())


class SilentDeleteStorage(LocalStorage):
    """Deleting in a missing bucket does nothing instead of raising."""

    def delete_objects(self, bucket, keys):
        if not self.bucket_exists(bucket):
            return
        super().delete_objects(bucket, keys)


class EmptyListingStorage(LocalStorage):
    """Listing a missing bucket gives an empty listing instead of raising."""

    def list_objects(self, bucket, prefix=""):
        if not self.bucket_exists(bucket):
            return iter(())
        return super().list_objects(bucket, prefix)


class StrictRangeStorage(LocalStorage):
    """Refuses ranges that reach past the end (passes the service's InvalidRange through)."""

    def get_object(self, bucket, key, byte_range=None):
        if byte_range is not None and byte_range[1] >= self.head_object(bucket, key).size:
            raise StorageError(f"InvalidRange: {byte_range} for {key!r}")
        return super().get_object(bucket, key, byte_range)


class SkipsEmptyStorage(LocalStorage):
    """Leaves empty objects out of listings (mistakes them for folder markers)."""

    def list_objects(self, bucket, prefix=""):
        return (o for o in super().list_objects(bucket, prefix) if o.size > 0)


class UrlEncodedKeysStorage(LocalStorage):
    """Returns keys URL-encoded in listings (S3's ``EncodingType=url`` left undecoded)."""

    def list_objects(self, bucket, prefix=""):
        for o in super().list_objects(bucket, prefix):
            yield ObjectInfo(key=urllib.parse.quote(o.key, safe="/"), size=o.size, last_modified=o.last_modified)


class SharedTempFileStorage(LocalStorage):
    """Writes through one fixed temporary name per key, so concurrent writers clobber it."""

    def put_object(self, bucket, key, body):
        path = self._path(bucket, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        src = io.BytesIO(body) if isinstance(body, (bytes, bytearray, memoryview)) else body
        with open(path + ".part", "wb") as f:
            shutil.copyfileobj(src, f, 4096)
        os.replace(path + ".part", path)


class ClaimsNoBucketCreationStorage(LocalStorage):
    """Says ``put_object`` does not create buckets, yet it does."""

    creates_bucket_on_put = False


class ClaimsBucketCreationStorage(LocalStorage):
    """Says ``put_object`` creates buckets, yet it raises."""

    creates_bucket_on_put = True

    def put_object(self, bucket, key, body):
        if not self.bucket_exists(bucket):
            raise StorageNoSuchBucketError(f"no bucket {bucket!r}")
        super().put_object(bucket, key, body)


#: (broken storage, the suite's check that must fail against it)
CASES = [
    (LikeStorage, "test_prefix_is_plain_text_not_a_pattern"),
    (GlobStorage, "test_prefix_is_plain_text_not_a_pattern"),
    (RegexStorage, "test_prefix_is_plain_text_not_a_pattern"),
    (OnePageStorage, "test_listing_over_1000_keys"),
    pytest.param(TenThousandStorage, "test_listing_over_10000_keys", marks=pytest.mark.slow),
    (CaseFoldingStorage, "test_keys_are_case_sensitive"),
    (SilentDeleteStorage, "test_delete_in_missing_bucket"),
    (EmptyListingStorage, "test_missing_bucket"),
    (StrictRangeStorage, "test_ranges_at_and_past_the_end"),
    (SkipsEmptyStorage, "test_empty_object"),
    (UrlEncodedKeysStorage, "test_keys_with_spaces_and_unicode"),
    (SharedTempFileStorage, "test_concurrent_writers_to_one_key"),
    (ClaimsNoBucketCreationStorage, "test_put_into_missing_bucket_follows_creates_bucket_on_put"),
    (ClaimsBucketCreationStorage, "test_put_into_missing_bucket_follows_creates_bucket_on_put"),
]


def _run_check(storage: LocalStorage, check: str) -> None:
    suite = StorageBackendConformance()
    method = getattr(suite, check)
    if check.startswith("test_missing_bucket") or check.startswith("test_delete_in_missing") or \
            check.startswith("test_put_into_missing"):
        method(storage)
        return
    storage.create_bucket("conformance")
    method(storage, "conformance", f"conformance/{uuid.uuid4().hex[:10]}/")


@pytest.mark.parametrize("broken, check", CASES)
def test_the_suite_fails_a_broken_storage(tmp_path, broken, check):
    storage = broken(LocalhostConfig(storage_root=str(tmp_path)))
    with pytest.raises(BaseException) as info:  # noqa: PT011 - any failure of the check will do
        _run_check(storage, check)
    assert not isinstance(info.value, (KeyboardInterrupt, SystemExit, pytest.skip.Exception))


# (the 10,000-key check runs against LocalStorage in test_conformance.py)
@pytest.mark.parametrize("check", sorted({c[1] for c in CASES if type(c) is tuple}))
def test_the_same_checks_pass_on_local_storage(tmp_path, check):
    _run_check(LocalStorage(LocalhostConfig(storage_root=str(tmp_path))), check)
