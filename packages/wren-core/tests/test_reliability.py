"""Retries, stragglers, exactly-once results, reattaching after a client crash (issue: reliability)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import wren
from wren import plugins


def _first_time(marker: str) -> bool:
    """True the first time it is called with ``marker`` (across processes)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def die_once(marker, value):
    if _first_time(marker):
        os._exit(9)
    return value


def raise_once(marker, value):
    if _first_time(marker):
        raise ConnectionError("flaky network")
    return value


def slow_once(marker, value):
    if _first_time(marker):
        time.sleep(30)
    return value


def test_lost_worker_is_retried(tmp_path):
    with wren.function_executor(retries=2) as ex:
        futures = ex.map(die_once, [(str(tmp_path / f"m{i}"), i) for i in range(4)])
        assert ex.get_result(futures) == [0, 1, 2, 3]
        assert all(f.stats["retries"] == 1 for f in futures)
        assert all("worker_died" in f.stats["attempt_errors"][0] for f in futures)


def test_without_retries_the_error_is_reported(tmp_path):
    with wren.function_executor() as ex:
        with pytest.raises(wren.WorkerDiedError):
            ex.get_result(ex.call_async(die_once, (str(tmp_path / "m"), 1)))


def test_user_exceptions_are_not_retried_unless_asked(tmp_path):
    with wren.function_executor(retries=3) as ex:
        with pytest.raises(ConnectionError, match="flaky"):
            ex.get_result(ex.call_async(raise_once, (str(tmp_path / "a"), 1)))
    with wren.function_executor(retries=3, retry_on=[ConnectionError]) as ex:
        fut = ex.call_async(raise_once, (str(tmp_path / "b"), 2))
        assert ex.get_result(fut) == 2 and fut.stats["retries"] == 1


def test_timeout_is_retried(tmp_path):
    with wren.function_executor(retries=1) as ex:
        fut = ex.call_async(slow_once, (str(tmp_path / "t"), 5), timeout=2)
        t0 = time.time()
        assert ex.get_result(fut) == 5
        assert time.time() - t0 < 20 and fut.stats["retries"] == 1


def test_speculation_backs_up_a_straggler(tmp_path):
    with wren.function_executor(speculation=True, max_workers=2) as ex:
        items = [(str(tmp_path / "slow"), "s")] + [(str(tmp_path / f"f{i}"), i) for i in range(19)]
        # only item 0 is slow the first time; every other marker is consumed by a fast call
        for i in range(19):
            open(tmp_path / f"f{i}", "w").close()
        t0 = time.time()
        futures = ex.map(slow_once, items)
        results = ex.get_result(futures)
        assert results == ["s"] + list(range(19))
        assert time.time() - t0 < 25  # the 30 s original was not waited for
        assert futures[0].stats.get("speculative_copies") == 1


def test_map_reduce_with_a_retried_map_call(tmp_path):
    with wren.function_executor(retries=1) as ex:
        fut = ex.map_reduce(die_once, [(str(tmp_path / f"r{i}"), i) for i in range(5)], sum)
        assert ex.get_result(fut) == 10


CLIENT = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import test_container_entrypoint as t
    import wren
    from wren import plugins
    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(t._Plugin(), name="httptest-plugin")
    with plugins.use_plugin_manager(pm):
        ex = wren.function_executor(config={{"wren": {{"backend": "httptest", "max_workers": 20}},
                                            "httptest": {{"url": {url!r}}}}})
        ex.map(time.sleep, [3] * 6)
        time.sleep(1.0)  # every call has been handed to the workers (they run 3 s)
        print(ex.executor_id, flush=True)
        time.sleep(60)  # killed here, before collecting anything
    """
)


@pytest.fixture
def httptest_plugin():
    import test_container_entrypoint as t

    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(t._Plugin(), name="httptest-plugin")
    with plugins.use_plugin_manager(pm):
        yield t


def test_reattach_after_the_client_is_killed(httptest_plugin, tmp_path):
    server, url = httptest_plugin.start_worker_server()
    try:
        script = tmp_path / "client.py"
        script.write_text(CLIENT.format(tests=os.path.dirname(__file__), url=url))
        client = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        executor_id = client.stdout.readline().strip()
        assert executor_id
        client.send_signal(signal.SIGKILL)
        client.wait()
        cfg = {"wren": {"backend": "httptest"}, "httptest": {"url": url}}
        with wren.function_executor(config=cfg) as ex:
            futures = ex.attach(executor_id)
            assert len(futures) == 6
            assert ex.get_result(futures, timeout=60) == [None] * 6
        # the new executor cleaned the old job's data and the record
        st = ex.storage_backend
        assert st.list_keys(ex.bucket, f"wren.jobs/{executor_id}/") == []
        with pytest.raises(wren.InvalidInputError, match="no record"):
            wren.function_executor(config=cfg).attach(executor_id)
    finally:
        server.terminate()
        server.wait(10)


def test_attach_unknown_executor():
    with wren.function_executor() as ex:
        with pytest.raises(wren.InvalidInputError, match="no record of executor"):
            ex.attach("deadbeef-0")


# -- the watchdog runs whoever waits: await, as_completed, a done callback ------------------------

class _BlackHoleBackend(wren.ComputeBackend):
    """Accepts every invocation and runs nothing: each call's worker is lost without a word."""

    name = "blackhole"
    runs_locally = True

    def invoke(self, job, calls, channel):
        pass


class _BlackHolePlugin:
    @wren.hookimpl
    def wren_compute_backends(self):
        return [wren.ComputeBackendSpec("blackhole", _BlackHoleBackend, None)]


@pytest.fixture
def lost_calls(monkeypatch):
    """An executor whose calls are lost, failed as lost half a second past their 1 s timeout."""
    from wren.client.attempts import Attempts

    monkeypatch.setattr(Attempts, "LOST_GRACE", 0.5)
    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(_BlackHolePlugin(), name="blackhole-plugin")
    with plugins.use_plugin_manager(pm):
        with wren.function_executor(backend="blackhole", runtime_timeout=1) as ex:
            yield ex


def test_await_ends_a_lost_call(lost_calls):
    import asyncio

    fut = lost_calls.call_async(abs, -1)

    async def main():
        return await asyncio.wait_for(asyncio.gather(fut, return_exceptions=True), 30)

    (outcome,) = asyncio.run(main())
    assert isinstance(outcome, wren.errors.CallTimeoutError) and "lost" in str(outcome)


def test_as_completed_and_callbacks_end_lost_calls(lost_calls):
    import threading

    called = threading.Event()
    lone = lost_calls.call_async(abs, -2)
    lone.add_done_callback(lambda f: called.set())  # nobody waits for this one
    futures = lost_calls.map(abs, [-3, -4])
    finished = list(wren.as_completed(futures, timeout=30))
    assert sorted(f.call_id for f in finished) == sorted(f.call_id for f in futures)
    assert all(isinstance(f.exception(), wren.errors.CallTimeoutError) for f in finished)
    assert called.wait(30) and isinstance(lone.exception(), wren.errors.CallTimeoutError)
