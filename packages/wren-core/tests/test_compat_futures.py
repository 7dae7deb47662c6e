"""Futures as iterdata (chaining), FuturesList, and the futures' state properties."""
from __future__ import annotations

import os
import time

import pytest

import wren
from wren.client.futures_list import FuturesList


@pytest.fixture
def fexec():
    with wren.function_executor() as ex:
        yield ex


def double(x):
    return 2 * x


def inc(x):
    return x + 1


def pair(a, b):
    return (a, b)


def total(results):
    return sum(results)


def wait_for_file(x, path):
    while not os.path.exists(path):
        time.sleep(0.01)
    return x


def test_map_over_futures(fexec):
    first = fexec.map(double, [1, 2, 3])
    second = fexec.map(inc, first)
    assert fexec.get_result(second) == [3, 5, 7]


def test_futures_list_chain(fexec):
    fs = fexec.map(double, [1, 2, 3])
    assert isinstance(fs, FuturesList)
    out = fs.map(inc).map(double)
    assert out is fs and len(out) == 3
    assert out.get_result() == [6, 10, 14]
    assert len(out.steps) == 9
    # get_result() of the executor returns the last step only (earlier steps fed it)
    fs2 = fexec.map(double, [5]).map(inc)
    assert fexec.get_result() == [11]
    assert fexec.get_result(fs2) == [11]


def test_futures_list_map_reduce_and_wait(fexec):
    fs = fexec.map(double, range(4))
    done, not_done = fs.wait()
    assert len(done) == 4 and not not_done
    assert fs.map_reduce(inc, total).get_result() == 16


def test_futures_inside_items(fexec):
    a, b = fexec.map(double, [10, 20])
    assert fexec.get_result(fexec.call_async(pair, (a, 5))) == (20, 5)
    assert fexec.get_result(fexec.map(pair, [{"a": 1, "b": b}])) == [(1, 40)]
    assert fexec.get_result(fexec.call_async(total, ([a, b],))) == 60


def test_a_failed_input_future_fails_the_next_step(fexec):
    def boom(x):
        raise KeyError("nope")

    bad = fexec.map(boom, [1])
    with pytest.raises(KeyError):
        fexec.get_result(fexec.map(inc, bad))


def test_workers_resolve_futures_when_results_are_stored(fexec, tmp_path):
    """Where results reach storage (every cloud backend), the client does not wait: the
    worker waits for and reads the input futures' results."""
    fexec._submitter.store_results = True  # as on a backend without a direct channel
    barrier = str(tmp_path / "go")
    first = fexec.map(wait_for_file, [1, 2], extra_args=(barrier,))
    second = fexec.map(double, first)  # returns at once: first is still blocked
    assert not any(f.ready for f in first)
    open(barrier, "w").close()
    assert fexec.get_result(second) == [2, 4]
    assert fexec.get_result(first) == [1, 2]


def test_state_properties(fexec, tmp_path):
    barrier = str(tmp_path / "go")
    f = fexec.call_async(wait_for_file, (1, barrier))
    assert not f.ready and not f.done and not f.success and not f.error
    deadline = time.monotonic() + 60
    while not f.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert f.running and not f.new
    open(barrier, "w").close()
    fexec.wait([f])
    assert f.ready and f.success and not f.running and not f.error
    assert f.result() == 1 and f.done
    g = fexec.call_async(pair, (1,) * 2)
    fexec.wait([g])
    assert not g.futures


def fan_out(n):
    ex = wren.function_executor()
    return ex.map(double, range(n))


def test_a_function_returning_futures_is_resolved(fexec):
    f = fexec.call_async(fan_out, 3)
    assert fexec.get_result(f) == [0, 2, 4]
    assert f.futures


def test_futures_of_another_executor_feed_a_map_when_results_are_stored():
    """Futures of executor A as the iterdata of executor B where results reach storage: B's
    worker cannot check A's records (signed with A's key, which B's jobs do not carry), so the
    client waits for them and sends their values (B's worker refused A's genuine records as
    tampered: found by the attacker outsider's no-attack baseline)."""
    with wren.function_executor() as a, wren.function_executor() as b:
        a._submitter.store_results = b._submitter.store_results = True  # as on a cloud backend
        first = a.map(inc, [1, 2])
        assert b.get_result(b.map(double, first)) == [4, 6]
        assert b.get_result(b.call_async(double, first[0])) == 4
