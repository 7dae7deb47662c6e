"""The localhost fast paths (issue 18): results of any size through the pool's pipes, the
map_reduce reducer handed the map results by the client, no listing of installed
distributions before the first call. Correctness only: the speed is measured in bench/."""
from __future__ import annotations

import hashlib
import os
import pickle
import socket
import threading

import pytest

import wren
from wren import serialize
from wren.compute.localhost import LocalhostBackend
from wren.config import WrenConfig
from wren.errors import SerializationError
from wren.worker import poolworker, stream
from wren.worker.runtime import WorkerRuntime


@pytest.fixture
def fexec():
    with wren.function_executor() as ex:
        yield ex


def random_bytes(n):
    return os.urandom(n)


def digest_of(n):
    data = os.urandom(n)
    return data, hashlib.sha256(data).hexdigest()


def ident(x):
    return x


def total(results):
    return sum(results)


def stored_keys(ex):
    return ex.storage_backend.list_keys(ex.bucket, ex.prefix + "/")


@pytest.mark.parametrize("size", [0, poolworker.INLINE_RESULT_BYTES, poolworker.INLINE_RESULT_BYTES + 1, 5 << 20])
def test_results_of_every_size_arrive_intact_without_storage(fexec, size):
    (data, digest), = fexec.get_result(fexec.map(digest_of, [size]))
    assert len(data) == size and hashlib.sha256(data).hexdigest() == digest
    assert not [k for k in stored_keys(fexec) if k.endswith((".result", ".status"))]


def test_many_large_results_in_order_across_workers(fexec):
    sizes = [(i % 3) * 300_000 + i for i in range(12)]
    results = fexec.get_result(fexec.map(random_bytes, sizes))
    assert [len(r) for r in results] == sizes


def test_a_decoded_result_does_not_keep_its_bytes(fexec):
    f = fexec.call_async(random_bytes, 1 << 20)
    assert len(f.result()) == 1 << 20
    assert "result" not in f._status
    assert len(f.result()) == 1 << 20  # asked again: the value, not a second decoding


def _stream(value):
    """``value`` through wren.worker.stream over a socket pair: (inline bytes or None, size,
    what the reading side got)."""
    import threading

    from wren.worker.wire import Channel

    a, b = socket.socketpair()
    writer, reader = Channel(a.detach()), Channel(b.detach())
    out = {}

    def put():
        try:
            out["sent"] = stream.sink(writer, poolworker.INLINE_RESULT_BYTES)(value, "the value")
        except Exception as exc:
            out["sent"] = exc
        writer.send("status")

    t = threading.Thread(target=put)
    t.start()
    got = reader.recv()
    if got == stream.STREAM:
        got = stream.read_result(reader, "the value")
        assert reader.recv() == "status"
    t.join()
    writer.close()
    reader.close()
    return out["sent"], got


@pytest.mark.parametrize("value", [b"", b"x" * 1000, os.urandom(3 << 20), bytearray(os.urandom(200_000)),
                                   {"a": [os.urandom(100_000)] * 3, "b": "text"}, list(range(50_000))])
def test_stream_round_trip(value):
    sent, got = _stream(value)
    if isinstance(sent[0], bytes):  # small: returned for the status record
        assert sent[1] == len(sent[0]) <= poolworker.INLINE_RESULT_BYTES
        assert pickle.loads(sent[0]) == value
    else:
        assert sent[0] is None and sent[1] > poolworker.INLINE_RESULT_BYTES
        assert got == (value, None) and type(got[0]) is type(value)


class Unreadable:
    def __init__(self, blob):
        self.blob = blob

    def __reduce__(self):
        return (_refuse, (self.blob,))


def _refuse(blob):
    raise ModuleNotFoundError("No module named 'elsewhere'", name="elsewhere")


def test_stream_a_result_the_client_cannot_unpickle_is_an_error_for_that_call():
    sent, (value, error) = _stream(Unreadable(os.urandom(200_000)))
    assert value is None and isinstance(error, SerializationError)
    assert "include_modules=['elsewhere']" in str(error)


def test_stream_a_result_that_fails_to_pickle_half_way_is_aborted():
    sent, (value, error) = _stream([os.urandom(200_000), threading.Lock()])
    assert isinstance(sent, SerializationError) and "cannot pickle" in str(sent)
    assert value is None and isinstance(error, SerializationError)


def test_unpicklable_large_result_through_the_pool(fexec):
    def make(n):
        return [os.urandom(n), threading.Lock()]

    with pytest.raises(SerializationError, match="cannot pickle"):
        fexec.call_async(make, 200_000).result()
    assert fexec.call_async(random_bytes, 300_000).result().__len__() == 300_000  # the worker goes on


@pytest.mark.parametrize("store_results", [False, True])
def test_runtime_result_sink_takes_results_whose_status_is_not_stored(fexec, store_results):
    job, calls, _ = fexec._submitter.pack(random_bytes, [((1 << 20,), {})], "async")
    job.store_results = store_results
    taken = []

    def sink(result, what):
        taken.append(result)
        return None, len(result)

    status = WorkerRuntime().run(job, calls[0], write_status=False, result_sink=sink)
    assert status["success"], status.get("traceback")
    if store_results:  # the status goes to storage: the result too, as the job's limit says
        assert not taken and status.get("result") is None and status["result_key"]
    else:
        assert len(taken[0]) == 1 << 20 and status["result_streamed"] and "result_key" not in status
        assert status["stats"]["func_result_size"] == 1 << 20


def test_map_reduce_hands_the_map_results_to_the_reducer(fexec):
    fs = fexec.map_reduce(ident, range(100), total)
    assert fexec.get_result(fs) == sum(range(100))
    # neither the map calls' statuses nor their results went through storage
    keys = stored_keys(fexec)
    assert not [k for k in keys if "/status" in k or "/result" in k], keys


def test_map_reduce_with_spawn_reducer_given_still_uses_a_waiting_reducer(fexec):
    fs = fexec.map_reduce(ident, range(10), total, spawn_reducer=wren.ALWAYS)
    assert fexec.get_result(fs) == 45
    assert [k for k in stored_keys(fexec) if k.endswith(".status")]  # the reducer read the stored ones


def test_map_reduce_failed_map_call_is_raised(fexec):
    def fails(x):
        if x == 3:
            raise ValueError("three")
        return x

    with pytest.raises(ValueError, match="three"):
        fexec.get_result(fexec.map_reduce(fails, range(5), total))


def test_localhost_runtime_metadata_lists_no_modules():
    backend = LocalhostBackend(None, WrenConfig())
    meta = backend.runtime_metadata()
    assert meta["modules"] is None and meta["python"] and meta["wren"] == wren.__version__


def test_finding_local_modules_does_not_list_installed_distributions():
    serialize.installed_top_level.cache_clear()
    assert serialize.find_local_modules(os.path.basename) == []  # the standard library's
    assert serialize.find_local_modules(pytest.raises) == []  # an installed distribution's
    assert serialize.installed_top_level.cache_info().currsize == 0
    # a file outside every installation folder: asked (is a distribution providing it?)
    assert serialize.find_local_modules(ident) == ["test_fast_paths"]


class ExitWhilePickled:
    def __reduce__(self):
        os._exit(3)


def dies_half_way(n):
    return [os.urandom(n), ExitWhilePickled()]  # the first megabyte is on its way when it exits


def test_a_worker_that_dies_in_the_middle_of_a_result_fails_that_call_only(fexec):
    with pytest.raises(wren.WorkerDiedError, match="exited with status 3"):
        fexec.call_async(dies_half_way, 1 << 20).result()
    assert len(fexec.call_async(random_bytes, 1 << 20).result()) == 1 << 20  # a new worker took over
