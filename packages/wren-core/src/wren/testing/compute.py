"""The compute conformance suite: the core scenarios through the public API."""
from __future__ import annotations

import os
import traceback
from typing import Any

import pytest

import wren
from wren.errors import WaitTimeoutError
from wren.testing import funcs


class ComputeBackendConformance:
    """Every compute plugin must pass these. Provide ``executor_config`` (a config dict)."""

    #: Seconds a backend may take to notice a dead worker and report it.
    death_report_seconds: float = 60.0

    @pytest.fixture
    def fexec(self, executor_config: dict[str, Any]):
        with wren.function_executor(config=executor_config) as ex:
            yield ex

    def test_map_in_order(self, fexec) -> None:
        assert fexec.get_result(fexec.map(funcs.double, range(20))) == [2 * i for i in range(20)]

    def test_call_async_single_value(self, fexec) -> None:
        fut = fexec.call_async(funcs.add, (1, 2, 3))
        assert fexec.get_result() == 6
        assert fut.ready and fut.done and fut.success and not fut.error

    def test_argument_rules(self, fexec) -> None:
        futures = fexec.map(funcs.count_args, [(1, 2), {"a": 1, "b": 2}, [1, 2, 3], "abc"])
        assert fexec.get_result(futures) == [(2, []), (0, ["a", "b"]), (1, []), (1, [])]

    def test_extra_args(self, fexec) -> None:
        assert fexec.get_result(fexec.map(funcs.add, [1, 2], extra_args=(10,))) == [11, 12]
        assert fexec.get_result(fexec.map(funcs.add, [1, 2], extra_args={"c": 100})) == [101, 102]

    def test_remote_exception_keeps_type_message_traceback(self, fexec) -> None:
        fut = fexec.call_async(funcs.fail, 7)
        with pytest.raises(funcs.CustomError, match="failed on 7") as info:
            fexec.get_result(fut)
        text = "".join(traceback.format_exception(info.value))
        assert "in fail" in text
        assert fut.error
        assert fexec.get_result(fut, throw_except=False) is None

    def test_other_calls_complete_when_one_fails(self, fexec) -> None:
        futures = fexec.map(funcs.fail, [1]) + fexec.map(funcs.double, range(5))
        fexec.wait(futures, throw_except=False)
        assert [f.error for f in futures] == [True] + [False] * 5
        assert fexec.get_result(futures[1:]) == [0, 2, 4, 6, 8]

    def test_timeout(self, fexec) -> None:
        """A call past its ``timeout`` fails with the call-timeout error, not a wait timeout."""
        fut = fexec.call_async(funcs.sleep_for, 30, timeout=2)
        with pytest.raises(TimeoutError) as info:
            fexec.get_result(fut, timeout=self.death_report_seconds)
        assert not isinstance(info.value, WaitTimeoutError), (
            f"the call was not stopped and reported within {self.death_report_seconds} s: "
            "the backend must enforce job.timeout and report CallTimeoutError"
        )
        assert isinstance(info.value, wren.CallTimeoutError), f"got {type(info.value).__name__}: {info.value}"
        assert fut.error

    def test_extra_env(self, fexec) -> None:
        fut = fexec.call_async(funcs.getenv, "WREN_CONFORMANCE_VAR", extra_env={"WREN_CONFORMANCE_VAR": "yes"})
        assert fexec.get_result(fut) == "yes"

    def test_call_cannot_change_the_clients_environment(self, fexec) -> None:
        """Calls run outside the client's process: neither ``extra_env`` nor what the call
        does to ``os.environ`` reaches the client."""

        def meddle(name: str) -> str:  # defined here: shipped by value, runs anywhere
            import os as _os

            _os.environ[name] = "set by a call"
            _os.environ.pop("WREN_CONFORMANCE_KEEP", None)
            return _os.environ.get("WREN_CONFORMANCE_EXTRA", "")

        os.environ["WREN_CONFORMANCE_KEEP"] = "client"
        try:
            futures = [fexec.call_async(meddle, "WREN_CONFORMANCE_SET", extra_env={"WREN_CONFORMANCE_EXTRA": "x"})
                       for _ in range(3)]
            assert fexec.get_result(futures) == ["x", "x", "x"]
            assert "WREN_CONFORMANCE_SET" not in os.environ
            assert "WREN_CONFORMANCE_EXTRA" not in os.environ
            assert os.environ.get("WREN_CONFORMANCE_KEEP") == "client"
        finally:
            os.environ.pop("WREN_CONFORMANCE_KEEP", None)
            os.environ.pop("WREN_CONFORMANCE_SET", None)

    def test_reserved_id_and_storage(self, fexec) -> None:
        assert fexec.get_result(fexec.map(funcs.with_id, ["a", "b", "c"])) == [("a", 0), ("b", 1), ("c", 2)]
        key = f"{fexec.prefix}/user-object"
        assert fexec.get_result(fexec.call_async(funcs.with_storage, key)) == "written by a worker"
        assert wren.Storage(storage_backend=fexec.storage_backend).get_object(fexec.bucket, key) == b"written by a worker"

    def test_large_data_goes_through_storage(self, fexec) -> None:
        blobs = [os.urandom(200_000 + i) for i in range(3)]
        assert fexec.get_result(fexec.map(funcs.length, [(b,) for b in blobs])) == [len(b) for b in blobs]

    def test_large_result(self, fexec) -> None:
        fut = fexec.call_async(os.urandom, 300_000)
        assert len(fexec.get_result(fut)) == 300_000

    def test_map_reduce_remote_and_local(self, fexec) -> None:
        fut = fexec.map_reduce(funcs.double, range(10), funcs.total)
        assert fexec.get_result(fut) == 90
        fut = fexec.map_reduce(funcs.double, range(10), funcs.total, reducer_wait_local=True)
        assert fexec.get_result(fut) == 90

    def test_worker_death_is_reported(self, fexec) -> None:
        dead = fexec.call_async(funcs.die, 3)
        ok = fexec.map(funcs.double, range(4))
        with pytest.raises(wren.WorkerDiedError):
            fexec.get_result(dead, timeout=self.death_report_seconds)
        assert fexec.get_result(ok) == [0, 2, 4, 6]

    def test_logs_are_kept(self, fexec) -> None:
        fut = fexec.call_async(funcs.printer, 5)
        fexec.get_result(fut)
        assert "hello from call 5" in fut.logs()

    def test_clean_leaves_nothing(self, executor_config) -> None:
        ex = wren.function_executor(config=executor_config)
        ex.get_result(ex.map(funcs.length, [(os.urandom(100_000),), (b"x",)]))
        st = ex.storage_backend
        assert st.list_keys(ex.bucket, ex.prefix + "/")
        ex.close()
        assert st.list_keys(ex.bucket, ex.prefix + "/") == []
