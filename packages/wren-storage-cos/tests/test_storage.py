"""COSStorage against a real S3 server: paging, batching, multipart, ranges, errors, config."""
import io
import os
import uuid

import pytest

import wren
from wren.config import parse_section
from wren.errors import ConfigError, StorageAuthError, StorageNoSuchBucketError, StorageNoSuchKeyError
from wren_storage_cos import COSConfig, COSStorage


@pytest.fixture
def prefix():
    return f"t/{uuid.uuid4().hex[:10]}/"


def make(section, **changes):
    return COSStorage(parse_section(COSConfig, "ibm_cos", {**section, **changes}))


def test_no_network_in_constructor():
    st = COSStorage(COSConfig(endpoint="http://127.0.0.1:1", storage_bucket="b", access_key_id="a", secret_access_key="s"))
    assert st._client is None  # nothing made until first use


def test_injected_client_is_used(cos_section):
    class Fake:
        def head_bucket(self, Bucket):
            self.asked = Bucket

    fake = Fake()
    st = COSStorage(parse_section(COSConfig, "ibm_cos", cos_section), client=fake)
    assert st.bucket_exists("xyz") and fake.asked == "xyz"


def test_plugin_is_registered():
    from wren.plugins import get_registry

    spec = get_registry().get("storage", "ibm_cos")
    assert spec.backend_class is COSStorage and spec.config_class is COSConfig
    assert COSStorage.schemes == ("cos",)


def test_listing_over_1000_keys_and_batched_delete(cos_storage, cos_section, prefix):
    bucket = cos_section["storage_bucket"]
    keys = [f"{prefix}{i:05d}" for i in range(2345)]
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda k: cos_storage.put_object(bucket, k, b"x"), keys))
    calls = []
    real = cos_storage.client.delete_objects

    def spy(**kw):
        calls.append(len(kw["Delete"]["Objects"]))
        return real(**kw)

    assert cos_storage.list_keys(bucket, prefix) == keys
    cos_storage.client.delete_objects = spy
    try:
        assert cos_storage.delete_prefix(bucket, prefix) == len(keys)
    finally:
        del cos_storage.client.delete_objects
    assert calls == [1000, 1000, 345]
    assert cos_storage.list_keys(bucket, prefix) == []


def test_multipart_upload(cos_section, prefix):
    st = make(cos_section, multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    bucket = cos_section["storage_bucket"]
    body = os.urandom(20 * 2**20 + 12345)
    used = []
    real = st.client.upload_fileobj
    st.client.upload_fileobj = lambda **kw: (used.append(1), real(**kw))[1]
    st.put_object(bucket, prefix + "big", io.BytesIO(body))
    st.put_object(bucket, prefix + "big-bytes", body)
    assert len(used) == 2
    assert st.head_object(bucket, prefix + "big").size == len(body)
    assert st.get_object(bucket, prefix + "big") == body
    assert st.get_object(bucket, prefix + "big-bytes", (10 * 2**20, 10 * 2**20 + 99)) == body[10 * 2**20:10 * 2**20 + 100]
    etag = st.head_object(bucket, prefix + "big").etag
    assert etag and "-" in etag  # a multipart ETag: "<md5>-<parts>"
    st.close()


def test_ranged_get_and_stream(cos_storage, cos_section, prefix):
    bucket = cos_section["storage_bucket"]
    body = bytes(range(256)) * 1000
    cos_storage.put_object(bucket, prefix + "r", body)
    assert cos_storage.get_object(bucket, prefix + "r", (100, 199)) == body[100:200]
    assert cos_storage.get_object(bucket, prefix + "r", (len(body) - 5, len(body) + 100)) == body[-5:]
    assert cos_storage.get_object(bucket, prefix + "r", (len(body) + 5, len(body) + 10)) == b""
    with cos_storage.open_object(bucket, prefix + "r", (1000, 200_999)) as f:
        assert f.readline() == body[1000:200_001].split(b"\n")[0] + b"\n"
        rest = f.read()
    assert len(rest) + len(body[1000:200_001].split(b"\n")[0]) + 1 == 200_000


def test_missing_bucket_and_key(cos_storage, cos_section):
    bucket = cos_section["storage_bucket"]
    missing = f"wren-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StorageNoSuchKeyError, match="no object"):
        cos_storage.get_object(bucket, "does/not/exist")
    with pytest.raises(StorageNoSuchKeyError):
        cos_storage.head_object(bucket, "does/not/exist")
    with pytest.raises(StorageNoSuchBucketError, match=missing):
        cos_storage.head_object(missing, "k")
    with pytest.raises(StorageNoSuchBucketError):
        list(cos_storage.list_objects(missing, "p/"))
    # (SeaweedFS creates a bucket on PUT, unlike COS and S3, so PUT is not checked here)
    assert cos_storage.bucket_exists(missing) is False


def test_create_bucket_is_idempotent(cos_storage):
    name = f"wren-new-{uuid.uuid4().hex[:8]}"
    cos_storage.create_bucket(name)
    cos_storage.create_bucket(name)
    assert cos_storage.bucket_exists(name)


def test_bad_credentials_never_leak(cos_section):
    secret = "S3cr3t-" + uuid.uuid4().hex
    st = make(cos_section, secret_access_key=secret)
    bucket = cos_section["storage_bucket"]
    for op in (
        lambda: st.get_object(bucket, "k"),
        lambda: st.put_object(bucket, "k", b"x"),
        lambda: list(st.list_objects(bucket)),
        lambda: st.bucket_exists(bucket),
    ):
        with pytest.raises(StorageAuthError) as info:
            op()
        text = str(info.value) + repr(info.value)
        assert secret not in text and "secret_access_key" in text
        assert info.value.__cause__ is None and info.value.__suppress_context__
    wrong_key = make(cos_section, access_key_id="nobody-" + uuid.uuid4().hex[:6], secret_access_key=secret)
    with pytest.raises(StorageAuthError) as info:
        wrong_key.head_object(bucket, "k")
    assert secret not in str(info.value)


def test_unreachable_endpoint_is_a_storage_error():
    st = COSStorage(COSConfig(endpoint="http://127.0.0.1:9", storage_bucket="b", access_key_id="a",
                              secret_access_key="very-secret", retries=1, connect_timeout=1))
    with pytest.raises(wren.StorageError, match="cannot reach") as info:
        st.get_object("b", "k")
    assert "very-secret" not in str(info.value)


# -- config ---------------------------------------------------------------------------------------

BASE = {"endpoint": "https://s3.example", "storage_bucket": "b"}


@pytest.mark.parametrize(
    "extra, match",
    [
        ({}, "needs credentials"),
        ({"api_key": "k", "access_key_id": "a", "secret_access_key": "s"}, "not both"),
        ({"access_key_id": "a"}, "secret_access_key is missing"),
        ({"secret_access_key": "s"}, "access_key_id is missing"),
        ({"api_key": "k", "retry_mode": "wild"}, "retry_mode"),
        ({"api_key": "k", "multipart_chunksize": 1024}, "5 MiB"),
        ({"api_key": "k", "endpont": "x"}, "did you mean 'endpoint'"),
    ],
)
def test_config_errors(extra, match):
    with pytest.raises(ConfigError, match=match):
        parse_section(COSConfig, "ibm_cos", {**BASE, **extra})


def test_config_needs_endpoint_and_bucket():
    with pytest.raises(ConfigError, match="WREN_IBM_COS__ENDPOINT"):
        parse_section(COSConfig, "ibm_cos", {"storage_bucket": "b", "api_key": "k"})
    with pytest.raises(ConfigError, match="endpoint must be a URL"):
        parse_section(COSConfig, "ibm_cos", {**BASE, "endpoint": "s3.example", "api_key": "k"})


def test_config_from_environment(monkeypatch):
    from wren.config import load_config, masked

    monkeypatch.setenv("WREN_IBM_COS__ENDPOINT", "https://s3.example/")
    monkeypatch.setenv("WREN_IBM_COS__STORAGE_BUCKET", "bkt")
    monkeypatch.setenv("WREN_IBM_COS__API_KEY", "the-key")
    monkeypatch.setenv("WREN_IBM_COS__MAX_POOL_CONNECTIONS", "8")
    cfg = load_config()
    section = parse_section(COSConfig, "ibm_cos", cfg.section("ibm_cos"))
    assert section.endpoint == "https://s3.example" and section.max_pool_connections == 8
    assert section.auth_mode == "api_key"
    assert "the-key" not in repr(section)
    assert masked(cfg.section("ibm_cos"), COSConfig)["api_key"] == "****"


def test_worker_config_roundtrip(cos_storage):
    cfg = cos_storage.worker_config()
    again = COSStorage(COSConfig(**cfg))
    assert again.config == cos_storage.config


def test_pickles_without_its_client(cos_storage):
    import pickle

    cos_storage.client  # noqa: B018 - make one
    copy = pickle.loads(pickle.dumps(cos_storage))
    assert copy._client is None and copy.config == cos_storage.config


def test_timestamps_are_read_without_dateutil_and_the_same():
    import datetime

    from ibm_botocore.utils import parse_timestamp as sdk_parse
    from wren_storage_cos.storage import parse_timestamp

    for text in ("2026-12-02T14:44:43.000Z", "2026-12-02T14:44:43Z", "2026-12-02T14:44:43.123456+02:00",
                 "Wed, 02 Dec 2026 14:44:43 GMT", "1764686683"):
        ours = parse_timestamp(text)
        assert ours.tzinfo is not None and ours.timestamp() == sdk_parse(text).timestamp(), text
    assert parse_timestamp("2026-12-02T14:44:43Z") == datetime.datetime(2026, 12, 2, 14, 44, 43, tzinfo=datetime.timezone.utc)


def test_listed_and_headed_objects_carry_their_time(cos_storage, cos_section, prefix):
    import time

    bucket = cos_section["storage_bucket"]
    cos_storage.put_object(bucket, prefix + "t", b"x")
    (listed,) = list(cos_storage.list_objects(bucket, prefix + "t"))
    headed = cos_storage.head_object(bucket, prefix + "t")
    assert abs(listed.last_modified - time.time()) < 300 and abs(headed.last_modified - listed.last_modified) < 2


def test_small_puts_do_not_wait_for_100_continue(cos_storage, cos_section, prefix):
    bucket = cos_section["storage_bucket"]
    seen = []
    cos_storage.client.meta.events.register("before-send.s3", lambda request, **kw: seen.append(dict(request.headers)))
    cos_storage.put_object(bucket, prefix + "small", b"x" * 1000)
    cos_storage.put_object(bucket, prefix + "large", b"x" * (2 * 1024 * 1024))
    assert "Expect" not in seen[0] and seen[1].get("Expect") in ("100-continue", b"100-continue")
    assert cos_storage.get_object(bucket, prefix + "small") == b"x" * 1000


def test_debug_logs_of_the_sdk_show_no_credential(cos_section, prefix):
    """With DEBUG logging on (the application's, or a call's: its output is kept with its
    status record in the bucket), the SDK logs each request's Authorization header: the access
    key id is masked there, and no configured secret appears anywhere (an attacker outsider
    found the access key id in DEBUG logs and in stored call logs)."""
    import logging

    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        st = make(cos_section)
        st.put_object(st.default_bucket, prefix + "k", b"v" * 100)
        assert st.get_object(st.default_bucket, prefix + "k") == b"v" * 100
        st.list_keys(st.default_bucket, prefix)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = "\n".join(lines)
    assert "Credential=***" in text  # the SDK did log its requests' headers
    assert cos_section["access_key_id"] not in text and cos_section["secret_access_key"] not in text
