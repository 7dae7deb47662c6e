"""Bad input: each case gets a clear error naming the fix, raised before anything is invoked,
and leaves nothing in storage."""
from __future__ import annotations

import dataclasses
import threading

import pytest

import wren
from wren import plugins
from wren.errors import (
    BackendNotInstalledError,
    ConfigError,
    DataLimitError,
    InvalidArgumentBindingError,
    InvalidInputError,
    PluginError,
    SerializationError,
)
from wren.config import secret_field
from wren.localconfig import LocalhostConfig
from wren.storage.local import LocalStorage


def one(x):
    return x


def two(a, b):
    return a + b


def with_id(x, id):  # noqa: A002
    return x


def with_obj(obj):
    return obj.key


def gen_func(x):
    yield x


async def coro_func(x):
    return x


def _closure_over_a_lock():
    lock = threading.Lock()

    def uses_lock(x):
        with lock:
            return x

    return uses_lock


CASES = [
    # (id, action(ex), exception type, message pattern)
    ("unpicklable function", lambda ex: ex.map(_closure_over_a_lock(), [1]), SerializationError, "cannot pickle.*function"),
    ("unpicklable argument", lambda ex: ex.map(one, [threading.Lock()]), SerializationError, "cannot pickle the arguments of call 0"),
    ("generator iterdata", lambda ex: ex.map(one, (i for i in range(3))), InvalidInputError, "pass list"),
    ("map object iterdata", lambda ex: ex.map(one, map(str, [1])), InvalidInputError, "one-shot iterator"),
    ("string iterdata", lambda ex: ex.map(one, "abc"), InvalidInputError, r"\['abc'\]"),
    ("bytes iterdata", lambda ex: ex.map(one, b"abc"), InvalidInputError, "pass a list"),
    ("dict iterdata", lambda ex: ex.map(one, {"x": 1}), InvalidInputError, "list\\(d.items\\(\\)\\)"),
    ("int iterdata", lambda ex: ex.map(one, 7), InvalidInputError, "must be a list"),
    ("None iterdata", lambda ex: ex.map(one, None), InvalidInputError, "must be a list"),
    ("too many arguments", lambda ex: ex.map(one, [(1, 2)]), InvalidArgumentBindingError, "call 0.*too many"),
    ("missing argument", lambda ex: ex.map(two, [(1,)]), InvalidArgumentBindingError, "missing a required argument: 'b'"),
    ("unexpected keyword", lambda ex: ex.map(one, [{"y": 1}]), InvalidArgumentBindingError, "wrap it in a tuple"),
    ("reserved name passed", lambda ex: ex.map(with_id, [{"x": 1, "id": 5}]), InvalidArgumentBindingError, "reserved"),
    ("non-string dict key", lambda ex: ex.map(one, [{1: 2}]), InvalidInputError, "non-string key"),
    ("zero timeout", lambda ex: ex.map(one, [1], timeout=0), InvalidInputError, "positive number of seconds"),
    ("negative timeout", lambda ex: ex.call_async(one, 1, timeout=-5), InvalidInputError, "positive number of seconds"),
    ("string timeout", lambda ex: ex.map(one, [1], timeout="10"), InvalidInputError, "positive number of seconds"),
    ("chunk_size without obj", lambda ex: ex.map(one, [1], chunk_size=10), InvalidInputError, "'obj' parameter"),
    ("zero chunk_size", lambda ex: ex.map(with_obj, ["wren-data/k"], chunk_size=0), InvalidInputError, "chunk_size"),
    ("negative chunk_n", lambda ex: ex.map(with_obj, ["wren-data/k"], chunk_n=-1), InvalidInputError, "chunk_n"),
    ("data over the limit", lambda ex: ex.map(one, [b"x" * (5 * 1024 * 1024)]), DataLimitError, "through storage|put_object"),
    ("bad extra_args type", lambda ex: ex.map(one, [1], extra_args={1, 2}), InvalidInputError, "extra_args must be a tuple"),
    ("bad extra_env type", lambda ex: ex.map(one, [1], extra_env=["A=1"]), InvalidInputError, "extra_env must be a dict"),
    ("bad extra_env name", lambda ex: ex.map(one, [1], extra_env={"A=B": "1"}), InvalidInputError, "invalid variable name"),
    ("negative runtime_memory", lambda ex: ex.map(one, [1], runtime_memory=-1), InvalidInputError, "runtime_memory"),
    ("generator function", lambda ex: ex.map(gen_func, [1]), InvalidInputError, "generator function"),
    ("coroutine function", lambda ex: ex.call_async(coro_func, 1), InvalidInputError, "asyncio.run"),
    ("not callable", lambda ex: ex.map(42, [1]), InvalidInputError, "function to run"),
    ("bad return_when", lambda ex: ex.wait([], return_when="SOME"), InvalidInputError, "ALL_COMPLETED"),
    ("negative wait timeout", lambda ex: ex.wait([], timeout=-1), InvalidInputError, "timeout"),
    ("reducer per object without obj", lambda ex: ex.map_reduce(one, [1], sum, reducer_one_per_object=True), InvalidInputError, "'obj' parameter"),
    ("missing key", lambda ex: (ex.storage_backend.create_bucket(ex.bucket), ex.map(with_obj, ["wren-data/no/such/key.txt"])),
     Exception, "no/such/key.txt"),
    ("missing bucket", lambda ex: ex.map(with_obj, ["no-such-bucket-xyz/k.txt"]), Exception, "no-such-bucket-xyz"),
    ("malformed URL", lambda ex: ex.map(with_obj, ["http://"]), InvalidInputError, "http://"),
    ("unknown URI scheme", lambda ex: ex.map(with_obj, ["ftp://host/file"]), InvalidInputError, "ftp"),
    ("futures of another executor", lambda ex: ex.wait(["not a future"]), InvalidInputError, "futures"),
    ("bad retry_on", lambda ex: wren.function_executor(retry_on=[3]), InvalidInputError, "exception classes"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_anything_runs(case):
    _, action, exc_type, pattern = case
    with wren.function_executor() as ex:
        with pytest.raises(exc_type, match=pattern):
            action(ex)
        assert ex.futures == []  # nothing was invoked
        st = ex.storage_backend
        assert not st.bucket_exists(ex.bucket) or st.list_keys(ex.bucket, ex.prefix + "/") == []  # nothing stored


CONFIG_CASES = [
    ("unknown backend", dict(backend="lambda"), PluginError, "choose one of: .*localhost"),
    ("unknown storage", dict(storage="s4"), PluginError, "unknown storage backend 's4'"),
    ("mistyped config key", dict(config={"wren": {"max_wrkers": 1}}), ConfigError, "did you mean 'max_workers'"),
    ("mistyped value", dict(config={"wren": {"max_workers": "lots"}}), ConfigError, "whole number"),
    ("unknown section", dict(config={"localhst": {}}), ConfigError, "did you mean 'localhost'"),
    ("unknown keyword", dict(max_worker=2), ConfigError, "max_workers"),
    ("negative retries", dict(retries=-1), ConfigError, "retries"),
]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_configuration(case):
    _, kwargs, exc_type, pattern = case
    with pytest.raises(exc_type, match=pattern):
        wren.function_executor(**kwargs)


def test_missing_plugin_names_the_distribution():
    pm = plugins.create_plugin_manager(load_entry_points=False)
    with plugins.use_plugin_manager(pm):
        with pytest.raises(BackendNotInstalledError, match="pip install wren-storage-cos"):
            wren.function_executor(storage="ibm_cos")


@dataclasses.dataclass
class _NeedsCreds:
    api_key: str | None = secret_field(None)
    endpoint: str = ""

    def validate(self):
        if not self.api_key:
            raise ConfigError("section 'vault' needs 'api_key' (or WREN_VAULT__API_KEY)")


class _VaultStorage(LocalStorage):
    name = "vault"
    config_class = _NeedsCreds

    def __init__(self, config):
        super().__init__(LocalhostConfig())


class _VaultPlugin:
    @wren.hookimpl
    def wren_storage_backends(self):
        return [wren.StorageBackendSpec("vault", _VaultStorage, _NeedsCreds)]


def test_missing_credentials():
    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(_VaultPlugin(), name="vault")
    with plugins.use_plugin_manager(pm):
        with pytest.raises(ConfigError, match="needs 'api_key'.*WREN_VAULT__API_KEY"):
            wren.function_executor(storage="vault")


def test_wrong_type_of_a_secret_is_not_echoed():
    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(_VaultPlugin(), name="vault")
    with plugins.use_plugin_manager(pm):
        with pytest.raises(ConfigError) as info:
            wren.function_executor(storage="vault", config={"vault": {"api_key": ["TOPSECRET-123"]}})
    assert "TOPSECRET-123" not in str(info.value)


class Unpicklable(Exception):
    def __init__(self, lock):
        super().__init__("an exception holding a lock")
        self.lock = lock


def raise_unpicklable(_):
    raise Unpicklable(threading.Lock())


def test_exception_that_cannot_be_pickled_on_the_worker():
    with wren.function_executor() as ex:
        with pytest.raises(wren.RemoteError, match="Unpicklable: an exception holding a lock") as info:
            ex.get_result(ex.call_async(raise_unpicklable, 1))
        assert "raise_unpicklable" in info.value.remote_traceback


def return_lock(_):
    return threading.Lock()


def test_result_that_cannot_be_pickled_on_the_worker():
    with wren.function_executor() as ex:
        with pytest.raises(SerializationError, match="cannot pickle the result of call 00000"):
            ex.get_result(ex.call_async(return_lock, 1))
