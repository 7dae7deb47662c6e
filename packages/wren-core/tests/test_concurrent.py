"""wren.concurrent.Executor against the standard library's expectations of an Executor, and
wren's own futures with as_completed, add_done_callback and asyncio."""
import asyncio
import concurrent.futures as cf
import threading
import time

import pytest

import wren
import wren.concurrent


def square(x):
    return x * x


def add(a, b=0, *, c=0):
    return a + b + c


def fail_key(k):
    return {}[k]


def sleep_then(x, s):
    time.sleep(s)
    return x


@pytest.fixture(scope="module")
def executor():
    with wren.concurrent.Executor() as ex:
        yield ex


def test_is_a_standard_executor(executor):
    assert isinstance(executor, cf.Executor)
    fut = executor.submit(add, 1, 2, c=3)
    assert isinstance(fut, cf.Future)
    assert fut.result(timeout=60) == 6


def test_as_completed_and_wait(executor):
    futures = [executor.submit(square, n) for n in range(8)]
    got = sorted(f.result() for f in cf.as_completed(futures, timeout=60))
    assert got == [n * n for n in range(8)]
    done, not_done = cf.wait(futures, timeout=60)
    assert len(done) == 8 and not not_done


def test_exception_keeps_its_type(executor):
    fut = executor.submit(fail_key, "missing")
    with pytest.raises(KeyError):
        fut.result(timeout=60)
    assert isinstance(fut.exception(), KeyError)


def test_add_done_callback(executor):
    seen = []
    called = threading.Event()
    fut = executor.submit(square, 7)

    def cb(f):
        seen.append(f.result())
        called.set()

    fut.add_done_callback(cb)
    assert called.wait(60)
    assert seen == [49]


def test_map_order_chunksize_and_timeout(executor):
    assert list(executor.map(square, range(10))) == [n * n for n in range(10)]
    assert list(executor.map(add, range(7), range(7), chunksize=3)) == [2 * n for n in range(7)]
    assert list(executor.map(square, [])) == []
    with pytest.raises(ValueError):
        executor.map(square, range(3), chunksize=0)
    it = executor.map(sleep_then, [1], [2], timeout=0.2)
    with pytest.raises(TimeoutError):
        next(it)


def test_asyncio_wrap_future_and_run_in_executor(executor):
    async def main():
        loop = asyncio.get_running_loop()
        a = await asyncio.wrap_future(executor.submit(square, 3))
        b = await loop.run_in_executor(executor, square, 4)
        return a, b

    assert asyncio.run(main()) == (9, 16)


def test_shutdown_rejects_new_work_and_cancel_futures():
    """cancel_futures cancels the calls still queued (one executing is not: as the standard
    library's executors, which mark a call running once it is handed to a worker)."""
    ex = wren.concurrent.Executor(max_workers=1)
    first = ex.submit(sleep_then, 0, 1)
    queued = ex.submit(sleep_then, 1, 2)  # waits for `first`: at most one call at a time
    ex.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    assert first.cancelled() or first.result(timeout=30) == 0
    with pytest.raises(RuntimeError):
        ex.submit(square, 2)


def test_shutdown_without_waiting_lets_submitted_calls_finish():
    ex = wren.concurrent.Executor()
    pending = [ex.submit(sleep_then, n, 0.5) for n in range(3)]
    ex.shutdown(wait=False)
    assert not all(f.done() for f in pending)  # it returned at once
    assert [f.result(timeout=60) for f in pending] == [0, 1, 2]  # as the standard library's do
    with pytest.raises(RuntimeError):
        ex.submit(square, 2)


def test_shutdown_waits():
    with wren.concurrent.Executor() as ex:
        futs = [ex.submit(sleep_then, n, 0.2) for n in range(3)]
    assert all(f.done() for f in futs)
    assert [f.result() for f in futs] == [0, 1, 2]


# -- wren's own futures ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fexec():
    with wren.function_executor() as ex:
        yield ex


def test_wren_as_completed(fexec):
    futures = fexec.map(sleep_then, [(n, 0.05 * (5 - n)) for n in range(5)])
    seen = list(wren.as_completed(futures, timeout=60))
    assert sorted(f.result() for f in seen) == list(range(5))
    assert len({id(f) for f in seen}) == 5
    slow = fexec.call_async(sleep_then, (1, 2))
    with pytest.raises(wren.WaitTimeoutError):
        list(wren.as_completed([slow], timeout=0.1))


def test_wren_add_done_callback(fexec):
    called = threading.Event()
    got = []
    fut = fexec.call_async(square, 5)
    fut.add_done_callback(lambda f: (got.append(f.result()), called.set()))
    assert called.wait(60)
    assert got == [25]
    late = []
    fut.add_done_callback(late.append)  # already finished: runs at once
    assert late == [fut]


def test_await_futures_with_gather(fexec):
    async def main():
        futures = fexec.map(square, range(6))
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        values = await asyncio.gather(*futures)
        more = await fexec.get_result_async(fexec.map(square, range(3)))
        t.cancel()
        return values, more, ticks

    values, more, ticks = asyncio.run(main())
    assert values == [n * n for n in range(6)]
    assert more == [0, 1, 4]
    assert ticks >= 1  # the loop kept running while the calls ran


def test_await_failed_future_raises_its_exception(fexec):
    async def main():
        return await fexec.call_async(fail_key, "k")

    with pytest.raises(KeyError):
        asyncio.run(main())


def _slow_identity(x, seconds):
    import time as _time

    _time.sleep(seconds)
    return x


def test_an_executing_call_is_running_and_cannot_be_cancelled():
    """concurrent.futures: running() is True while the call executes, and cancel() then
    returns False (found by a notebook user's tests)."""
    import time as _time

    with wren.concurrent.Executor(max_workers=1) as ex:
        f = ex.submit(_slow_identity, 1, 3.0)
        deadline = _time.monotonic() + 10
        while not f.running() and _time.monotonic() < deadline:
            _time.sleep(0.05)
        assert f.running()
        assert f.cancel() is False
        assert f.result(timeout=30) == 1


def test_cancelling_get_result_async_frees_the_program_at_once():
    """A notebook user's test: asyncio.run() returned only once the remote call finished."""
    import asyncio
    import time as _time

    async def main():
        with wren.function_executor() as fexec:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(fexec.get_result_async(fexec.map(_slow_identity, [(1, 60.0)])), 0.2)
            return await fexec.get_result_async(fexec.map(_slow_identity, [(2, 0.1), (3, 0.1)]))

    t0 = _time.monotonic()
    assert asyncio.run(main()) == [2, 3]
    assert _time.monotonic() - t0 < 30  # not after the 60 s call


def test_futures_turn_running_and_done_without_a_refused_transition(caplog):
    """Asking running() while calls end: every future ends done with its result, and
    concurrent.futures logs nothing (a 100,000-call map once logged "Future ... in unexpected
    state: FINISHED": a watcher thread marked a future running as it was being settled; the
    transitions now share a lock, and no thread polls)."""
    caplog.set_level("CRITICAL", logger="concurrent.futures")
    with wren.concurrent.Executor() as ex:
        futures = [ex.submit(square, n) for n in range(400)]
        stop = threading.Event()

        def ask():
            while not stop.is_set():
                for f in futures:
                    f.running()

        askers = [threading.Thread(target=ask) for _ in range(2)]
        for t in askers:
            t.start()
        try:
            assert [f.result(timeout=60) for f in futures] == [n * n for n in range(400)]
        finally:
            stop.set()
            for t in askers:
                t.join()
    assert not [r for r in caplog.records if r.name == "concurrent.futures"], caplog.text
    assert all(f.done() and not f.running() for f in futures)



def test_map_is_one_job():
    """Executor.map of many items is one wren job (one future per item, no job per item)."""
    with wren.concurrent.Executor() as ex:
        assert list(ex.map(square, range(2000))) == [n * n for n in range(2000)]
        assert [row["calls"] for row in ex.function_executor.job_summary()] == [2000]


def test_submit_checks_the_data_limit_and_names_the_users_function():
    """submit's arguments are the call's data, under data_limit as map's are (they went into
    the function, past the limit, and the size warning blamed wren's wrapper); job records
    name the user's function, not wren's wrapper."""
    with wren.concurrent.Executor(config={"wren": {"data_limit": 1}}) as ex:
        with pytest.raises(wren.errors.DataLimitError, match="data_limit"):
            ex.submit(len, b"x" * (2 << 20))
        assert ex.submit(square, 3).result(timeout=60) == 9
        assert list(ex.map(square, [1, 2])) == [1, 4]
        assert [row["function"] for row in ex.function_executor.job_summary()] == ["square", "square"]
