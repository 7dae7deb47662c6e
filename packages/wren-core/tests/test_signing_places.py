"""A signature binds an object to its place: the executor, the job, the call and the kind of
object. Someone who can write to the bucket (but cannot read invocations) copies validly
signed objects of the same executor over others; the worker and the client must refuse them,
failing only the calls concerned. Runs through the container entry point, so statuses and
results travel through storage as on every cloud backend."""
from __future__ import annotations

import pytest

import wren
from wren import plugins, serialize


@pytest.fixture
def http_executor_config():
    import test_container_entrypoint as t

    server, url = t.start_worker_server()
    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(t._Plugin(), name="httptest-plugin")
    try:
        with plugins.use_plugin_manager(pm):
            yield {"wren": {"backend": "httptest", "monitor_interval": 0.1}, "httptest": {"url": url}}
    finally:
        server.terminate()
        server.wait(10)


def big_result(tag):
    return tag * 100_000  # over the inline limit: stored as its own result object


def first_function(x):
    return ("first", x)


def second_function(x):
    return ("second", x)


def test_a_result_copied_over_another_calls_result_is_refused(http_executor_config):
    with wren.function_executor(config=http_executor_config) as ex:
        fs = ex.map(big_result, ["a", "b", "c"])
        ex.wait(fs)  # statuses are in; results are read on demand
        st, keys = ex.storage_backend, [f._status["result_key"] for f in fs]
        st.put_object(ex.bucket, keys[0], st.get_object(ex.bucket, keys[1]))
        results = ex.get_result(fs, throw_except=False)
        assert results == [None, "b" * 100_000, "c" * 100_000]
        assert isinstance(fs[0].exception(), wren.SerializationError)
        assert "copied from another place" in str(fs[0].exception())
        with pytest.raises(wren.SerializationError, match=keys[0]):
            fs[0].result()


def test_a_function_copied_over_another_function_is_refused_on_the_worker(http_executor_config):
    with wren.function_executor(config=http_executor_config) as ex:
        st = ex.storage_backend
        real_put = st.put_object
        stored_funcs = []

        def put(bucket, key, body):
            if "/funcs/" in key:
                stored_funcs.append(body)
                body = stored_funcs[0]  # every later function is replaced by the first one
            real_put(bucket, key, body)

        st.put_object = put
        assert ex.get_result(ex.map(first_function, [1])) == [("first", 1)]
        fut = ex.call_async(second_function, 2)
        with pytest.raises(wren.SerializationError, match="the stored function"):
            ex.get_result(fut)
        assert len(stored_funcs) == 2 and stored_funcs[0] != stored_funcs[1]


def test_swapped_data_ranges_are_refused(http_executor_config):
    with wren.function_executor(config=http_executor_config) as ex:
        st = ex.storage_backend
        real_put = st.put_object

        def put(bucket, key, body):
            if key.endswith("/data.pickle"):
                body = body if isinstance(body, bytes) else body.read()
                half = len(body) // 2  # two signed ranges of the same size: swap them
                body = body[half:] + body[:half]
            real_put(bucket, key, body)

        st.put_object = put
        fs = ex.map(len, [(b"x" * 100_000,), (b"y" * 100_000,)])
        ex.wait(fs, throw_except=False)
        for f in fs:
            assert isinstance(f.exception(), wren.SerializationError), f.exception()
            assert "call data" in str(f.exception())


def test_a_status_copied_over_another_is_refused_after_attach(http_executor_config):
    ex = wren.function_executor(config=http_executor_config, clean_on_exit=False)
    fs = ex.map(first_function, [10, 11, 12])
    assert ex.get_result(fs) == [("first", 10), ("first", 11), ("first", 12)]
    ex.close(clean=False)  # the client "dies"; a new one reattaches
    st = ex.storage_backend
    status0, status1 = (f"{fs[0].job_prefix}/{f.call_id}.status" for f in fs[:2])
    st.put_object(ex.bucket, status0, st.get_object(ex.bucket, status1))
    with wren.function_executor(config=http_executor_config) as again:
        attached = again.attach(ex.executor_id)
        results = again.get_result(attached, throw_except=False)
        assert results == [None, ("first", 11), ("first", 12)]
        assert "copied from another place" in str(attached[0].exception())
        again.clean()


def test_a_record_naming_another_call_is_refused():
    from wren.future import ResponseFuture
    from wren.monitors.storage import check_record

    f = ResponseFuture("e-1", "M000", "00000", "wren.jobs/e-1/M000", "b")
    check_record(f, {"job_key": "e-1/M000", "call_id": "00000"})
    with pytest.raises(wren.SerializationError, match="names"):
        check_record(f, {"job_key": "e-1/M000", "call_id": "00001"})


def test_a_signature_is_bound_to_its_place():
    key = b"k" * 32
    blob = serialize.sign(key, b"payload", "wren.jobs/e/M000/00001.result")
    assert bytes(serialize.verify(key, blob, "a result", "wren.jobs/e/M000/00001.result")) == b"payload"
    with pytest.raises(wren.SerializationError, match="copied from another place"):
        serialize.verify(key, blob, "a result", "wren.jobs/e/M000/00002.result")
    with pytest.raises(wren.SerializationError):
        serialize.verify(b"j" * 32, blob, "a result", "wren.jobs/e/M000/00001.result")


def pickled_nested_futures(n):
    """What a worker stores in its status record when a call returns its executor's futures."""
    inner = wren.function_executor()
    futures = inner.map(big_result, ["n"] * n)
    inner.wait(futures)
    return serialize.dumps(futures, "the futures")


def test_futures_returned_by_a_call_travel_without_keys():
    import pickle

    with wren.function_executor() as ex:
        blob = ex.get_result(ex.call_async(pickled_nested_futures, 2))
        futures = pickle.loads(blob)
        nested_id = futures[0].executor_id
        assert nested_id.startswith(ex.executor_id + ".")
        nested_secret = serialize.derive_secret(ex.executor_id, ex._identity.secret, nested_id)
        for secret in (ex._identity.secret, nested_secret):
            assert secret not in blob and secret.hex().encode() not in blob
        # the client derives the nested executor's key itself and reads the results
        assert ex.get_result(futures) == ["n" * 100_000] * 2


def test_an_executor_cannot_be_pickled():
    import pickle

    with wren.function_executor() as ex:
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(ex)


def two_mib(x):
    return b"A" * (2 << 20)


def test_an_oversized_object_in_place_of_a_result_is_refused_without_reading_it_whole(http_executor_config):
    """An attacker's 1 GiB object must not be read into the client's memory (outsider's test)."""
    import resource

    with wren.function_executor(config=http_executor_config) as ex:
        fs = ex.map(two_mib, [1, 2])
        ex.wait(fs)
        st = ex.storage_backend
        path = st._path(ex.bucket, fs[0]._status["result_key"])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with open(path, "r+b") as f:
            f.truncate(1 << 30)  # sparse: costs no disk
        results = ex.get_result(fs, throw_except=False)
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert results[0] is None and results[1] == b"A" * (2 << 20)
        assert "larger than its call recorded" in str(fs[0].exception())
        assert grown_mb < 200, f"the client's peak memory grew by {grown_mb:.0f} MB"


def test_a_named_pipe_in_place_of_a_result_does_not_hang(http_executor_config):
    import os

    with wren.function_executor(config=http_executor_config) as ex:
        fs = ex.map(two_mib, [1, 2])
        ex.wait(fs)
        path = ex.storage_backend._path(ex.bucket, fs[0]._status["result_key"])
        os.remove(path)
        os.mkfifo(path)
        results = ex.get_result(fs, throw_except=False, timeout=30)
        assert results[0] is None and "not a regular file" in str(fs[0].exception())
        assert results[1] == b"A" * (2 << 20)


def test_reading_a_cleaned_result_says_so(http_executor_config):
    with wren.function_executor(config=http_executor_config) as ex:
        fs = ex.map(big_result, ["a"])
        ex.wait(fs)  # the status is in; the stored result is read on demand
        ex.clean()
        with pytest.raises(wren.StorageError, match="was cleaned"):
            ex.get_result(fs)
