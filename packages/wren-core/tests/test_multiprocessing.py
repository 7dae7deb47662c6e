"""wren.multiprocessing.Pool against the expectations CPython's own test suite has of
multiprocessing.pool.Pool (test_multiprocessing's _TestPool), on the localhost backend."""
import multiprocessing
import os
import time

import pytest

from wren.multiprocessing import Pool


def sqr(x, wait=0.0):
    time.sleep(wait)
    return x * x


def mul(x, y):
    return x * y


def raise_large_valuerror(wait):
    time.sleep(wait)
    raise ValueError("x" * 1024 ** 2)


def fail_key(k):
    return {}[k]


INIT_VALUE = None


def set_init(value):
    global INIT_VALUE
    INIT_VALUE = value


def read_init(_):
    return INIT_VALUE, os.getpid()


@pytest.fixture(scope="module")
def pool():
    with Pool(4) as p:
        yield p


def test_apply(pool):
    assert pool.apply(sqr, (5,)) == sqr(5)
    assert pool.apply(sqr, (), {"x": 3}) == sqr(3)


def test_map(pool):
    assert pool.map(sqr, list(range(10))) == list(map(sqr, range(10)))
    assert pool.map(sqr, list(range(20)), chunksize=3) == list(map(sqr, range(20)))
    assert pool.map(sqr, []) == []


def test_starmap(pool):
    tuples = list(zip(range(10), range(9, -1, -1)))
    assert pool.starmap(mul, tuples) == [mul(*t) for t in tuples]
    assert pool.starmap(mul, tuples, chunksize=4) == [mul(*t) for t in tuples]
    assert pool.starmap_async(mul, tuples).get() == [mul(*t) for t in tuples]


def test_map_async_and_callbacks(pool):
    assert pool.map_async(sqr, list(range(10))).get() == list(map(sqr, range(10)))
    call_args = []
    pool.map_async(int, ["1"], callback=call_args.append, error_callback=call_args.append).wait()
    assert call_args == [[1]]
    call_args.clear()
    res = pool.map_async(int, ["a"], callback=call_args.append, error_callback=call_args.append)
    res.wait()
    assert len(call_args) == 1 and isinstance(call_args[0], ValueError)
    with pytest.raises(ValueError):
        res.get()
    assert not res.successful()


def test_async_and_timeout(pool):
    res = pool.apply_async(sqr, (7, 0.5))
    with pytest.raises(ValueError):
        res.successful()  # not ready yet
    assert not res.ready()
    assert res.get() == 49
    assert res.ready() and res.successful()
    slow = pool.apply_async(sqr, (6, 1.5))
    with pytest.raises(multiprocessing.TimeoutError):
        slow.get(timeout=0.1)
    slow.wait(timeout=0.05)
    assert not slow.ready()


def test_exception_keeps_its_type(pool):
    with pytest.raises(KeyError):
        pool.apply(fail_key, ("k",))
    with pytest.raises(ValueError):
        pool.map(raise_large_valuerror, [0])


def test_imap(pool):
    it = pool.imap(sqr, list(range(10)))
    assert list(it) == list(map(sqr, range(10)))
    it = pool.imap(sqr, list(range(10)))
    for i in range(10):
        assert next(it) == i * i
    with pytest.raises(StopIteration):
        next(it)
    it = pool.imap(sqr, list(range(1000)), chunksize=100)
    assert list(it) == list(map(sqr, range(1000)))
    with pytest.raises(ValueError):
        pool.imap(sqr, [1], chunksize=0)


def test_imap_timeout(pool):
    it = pool.imap(sqr, [(2)], chunksize=1)
    slow = pool.imap(sqr, [3])
    assert it.next(timeout=60) == 4
    assert slow.next(60) == 9
    late = pool.imap_unordered(mul, [])
    with pytest.raises(StopIteration):
        late.next(0.1)


def test_imap_unordered(pool):
    it = pool.imap_unordered(sqr, list(range(10)))
    assert sorted(it) == list(map(sqr, range(10)))
    it = pool.imap_unordered(sqr, list(range(100)), chunksize=7)
    assert sorted(it) == list(map(sqr, range(100)))
    # a slow first item does not hold back the others
    order = list(pool.imap_unordered(sqr, [10, 1, 2], chunksize=1))
    assert sorted(order) == [1, 4, 100]


def test_imap_handles_exception(pool):
    it = pool.imap(fail_key, ["a"])
    with pytest.raises(KeyError):
        next(it)


def test_make_pool_rejects_bad_arguments():
    with pytest.raises(ValueError):
        Pool(-1)
    with pytest.raises(ValueError):
        Pool(0)
    with pytest.raises(TypeError):
        Pool(1, initializer=5)


def test_close_join_and_not_running():
    p = Pool(2)
    res = p.map_async(sqr, [1, 2, 3])
    with pytest.raises(ValueError):
        p.join()  # still running
    p.close()
    with pytest.raises(ValueError):
        p.apply(sqr, (1,))
    p.join()
    assert res.ready() and res.get() == [1, 4, 9]


def test_terminate_and_context_manager():
    with Pool(2) as p:
        res = p.apply_async(sqr, (2, 1.5))
    # __exit__ terminated the pool: the pending result is dropped, the pool refuses work
    res.wait(5)
    assert res.ready() and not res.successful()
    with pytest.raises(ValueError):
        p.map(sqr, [1])
    with pytest.raises(ValueError):
        with p:
            pass
    p.join()


def test_initializer_runs_once_per_process_before_calls():
    with Pool(2, initializer=set_init, initargs=("ready",)) as p:
        got = p.map(read_init, range(8))
    assert {v for v, _ in got} == {"ready"}


def test_map_chunks_as_the_standard_librarys_pool():
    """map/starmap without chunksize group items as multiprocessing.Pool does (about four
    calls per process): 100 items on 2 processes are 8 backend calls of up to 13 items, where
    one call per item made a 100,000-item map 5x slower than the standard library's Pool."""
    with Pool(2) as p:
        def calls():
            return [row["calls"] for row in p._executor.function_executor.job_summary()]

        assert p.map(sqr, range(100)) == [x * x for x in range(100)]
        assert calls() == [8]
        assert p.starmap(sqr, [(x,) for x in range(5)]) == [x * x for x in range(5)]
        assert calls() == [8, 5]  # ceil(5 / 8) = 1 per call
        assert p.map(sqr, range(10), chunksize=1) == [x * x for x in range(10)]
        assert calls() == [8, 5, 10]


STATE = {}


def set_state(v):
    STATE["v"] = v


def read_state(x):
    return STATE.get("v")


def test_the_initializer_state_reaches_every_function_the_pool_runs():
    """What the initializer set is what each function reads, whatever ran before it in the
    pool (it read None once another function's job had run the initializer in a copy of
    the globals of its own)."""
    with Pool(2, initializer=set_state, initargs=(10,)) as p:
        assert p.map(sqr, range(4)) == [0, 1, 4, 9]
        assert p.map(read_state, range(4)) == [10] * 4
        assert p.apply(read_state, (0,)) == 10
        assert list(p.imap_unordered(read_state, range(3))) == [10] * 3
