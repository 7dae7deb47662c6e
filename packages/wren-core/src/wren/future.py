"""``ResponseFuture``: the handle of one call.

States, in order: ``new`` -> ``invoked`` -> ``running`` -> ``success`` | ``error``. ``ready`` is
true once the call finished (its status record arrived); ``done`` once its result was read on
the client (or it failed). Results are decoded lazily, on the client, when first asked for.
"""
from __future__ import annotations

import logging
import functools
import inspect
import pickle
import threading
import time
from types import TracebackType
from typing import Any, Protocol
from collections.abc import Callable, Generator

from wren import serialize
from wren.errors import (
    RemoteError,
    RemoteTraceback,
    SerializationError,
    StorageError,
    StorageNoSuchKeyError,
    WaitTimeoutError,
)

NEW, INVOKED, RUNNING, SUCCESS, ERROR = "new", "invoked", "running", "success", "error"

logger = logging.getLogger("wren.future")


class FutureOwner(Protocol):
    """What a future needs from the executor that waits for it (the future knows nothing else
    of executors): where results are stored, how to wait, how to resolve returned futures."""

    storage_backend: Any

    def wait(self, fs: Any = None, return_when: Any = ..., throw_except: bool = True,
             timeout: float | None = None, show_progressbar: bool = True) -> Any: ...

    def resolve_nested(self, value: Any, throw_except: bool, timeout: float | None) -> Any: ...


def rebuild_exception(status: dict[str, Any]) -> BaseException:
    """The exception of a failed call's status record, with the remote traceback as its cause.
    An exception that cannot be unpickled here becomes :class:`wren.RemoteError`."""
    exc: BaseException | None = None
    if status.get("exception") is not None:
        try:
            exc = pickle.loads(status["exception"])
        except Exception:
            exc = None
    tb = status.get("traceback") or ""
    if exc is None:
        exc = RemoteError(
            f"{status.get('exc_type', 'Exception')}: {status.get('exc_message', '')}",
            status.get("exc_type", ""),
            tb,
        )
    note = status.get("call_note")
    if note and note not in getattr(exc, "__notes__", ()):
        if hasattr(exc, "add_note"):  # Python 3.11+
            exc.add_note(note)
        else:
            tb = f"{tb}{note}\n"
    if status.get("frames"):
        try:  # the call's frames at their real lines (tblib's stand-ins start at the raising line)
            exc.__traceback__ = rebuild_traceback(status["frames"])
        except Exception:  # noqa: BLE001 - keep tblib's
            pass
    if tb:
        exc.__cause__ = RemoteTraceback(tb)
        try:
            exc.remote_traceback = tb  # type: ignore[attr-defined]
        except Exception:
            pass
    return exc


#: Modules whose frames only carry a call's outcome to the user: wren's own, and the standard
#: library's futures, asyncio and threads that wren's interfaces hand it through.
_PLUMBING = ("wren", "concurrent.futures", "asyncio", "threading")


def _is_plumbing_frame(frame: Any) -> bool:
    name = str(frame.f_globals.get("__name__", ""))
    return any(name == p or name.startswith(p + ".") for p in _PLUMBING)


def without_plumbing(exc: BaseException) -> BaseException:
    """``exc`` with the leading frames of its traceback that are wren's or the standard
    library's plumbing taken off (a call's own frames, which follow them, stay)."""
    frames = exc.__traceback__
    while frames is not None and _is_plumbing_frame(frames.tb_frame):
        frames = frames.tb_next
    return exc.with_traceback(frames)


def is_outcome(exc: BaseException) -> bool:
    """Whether ``exc`` is a call's failure (raised for the call), not wren's own error."""
    return bool(getattr(exc, "_wren_outcome", False))


def user_facing(fn: Callable[..., Any]) -> Callable[..., Any]:
    """For the methods users call to get results (plain or ``async``): a call's failure is
    raised with wren's client-side frames taken off (the user's own frames stay, and the call's
    frames are in its cause, the RemoteTraceback); pytest and IPython hide the one frame that
    re-raises it."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True  # noqa: F841 - read by pytest and IPython
            try:
                return await fn(*args, **kwargs)
            except BaseException as call_failure:
                if not is_outcome(call_failure):
                    raise  # wren's own error (a bug, bad input): every frame stays
                raise without_plumbing(call_failure)  # noqa: B904 (the call's exception, re-raised by wren)

        call_async.__code__ = call_async.__code__.replace(co_name=fn.__name__)  # type: ignore[attr-defined]
        return call_async

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # noqa: F841 - read by pytest and IPython
        try:
            return fn(*args, **kwargs)
        except BaseException as call_failure:
            if not is_outcome(call_failure):
                raise  # wren's own error (a bug, bad input): every frame stays
            raise without_plumbing(call_failure)  # noqa: B904 (the call's exception, re-raised by wren)

    # Python always lists the frame that raises: in a plain script this one shows, named after
    # the method the user called (``in get_result``) and with the comment above as its line
    call.__code__ = call.__code__.replace(co_name=fn.__name__)  # type: ignore[attr-defined]
    return call


def _mark_outcome(exc: BaseException) -> BaseException:
    try:
        exc._wren_outcome = True  # type: ignore[attr-defined]
    except Exception:  # an exception type without attributes: its frames stay
        pass
    return exc


def rebuild_traceback(frames: list[Any]) -> TracebackType | None:
    """A traceback of stand-in frames, one per ``(file, function, line, first line)`` record
    the worker sent: each at its file and line, in a code object that starts at the function's
    first line (so IPython finds the function and points at the raising line), and whose raise
    spans the whole source line (so no caret range that is not the real one is drawn)."""
    import linecache
    import sys

    top: TracebackType | None = None
    last: TracebackType | None = None
    for filename, name, lineno, firstlineno in frames:
        lineno, first = int(lineno), min(int(firstlineno), int(lineno)) or 1
        line = linecache.getline(filename, lineno)
        indent, width = len(line) - len(line.lstrip()), len(line.strip())
        # the raise stands where the real statement does and is as long (padded inside
        # parentheses), so no caret range is drawn under a statement it is not
        body = "raise _w" if width < 10 else "raise (_w" + " " * (width - 10) + ")"
        if indent and lineno > first:
            source = "\n" * (lineno - first - 1) + "if 1:\n" + " " * indent + body
        else:
            source = "\n" * (lineno - first) + body
        try:
            code = compile(source, filename, "exec").replace(co_name=name, co_firstlineno=first)
            exec(code, {"_w": _FrameMarker(), "__name__": "wren-remote-call"})  # noqa: S102
        except _FrameMarker:
            made = sys.exc_info()[2]
            made = made.tb_next if made is not None else None
        except Exception:  # noqa: BLE001 - a frame that cannot be rebuilt is left out
            continue
        else:  # pragma: no cover - the code always raises
            continue
        if made is None:
            continue
        made.tb_next = None
        if last is None:
            top = made
        else:
            last.tb_next = made
        last = made
    return top


class _FrameMarker(Exception):
    pass


def contains_futures(value: Any) -> bool:
    if isinstance(value, ResponseFuture):
        return True
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, ResponseFuture) for v in value):
        return True
    return False


class ResponseFuture:
    """One call's future. Thread-safe; picklable (a function may return futures).

    Executors make them; users do not build futures themselves.

    :param executor_id: the id of the executor that submitted the call.
    :param job_id: the id of the call's job within that executor.
    :param call_id: the call's id within its job (a zero-padded number).
    :param job_prefix: the storage prefix under which the job keeps its data.
    :param bucket: the storage bucket of that data.
    :param kind: ``map``, ``async`` (``call_async``) or ``reduce``.
    """

    def __init__(
        self,
        executor_id: str,
        job_id: str,
        call_id: str,
        job_prefix: str,
        bucket: str,
        kind: str = "map",
    ):
        self.executor_id = executor_id
        self.job_id = job_id
        self.call_id = call_id
        self.job_prefix = job_prefix
        self.bucket = bucket
        self.kind = kind  # map, async, reduce
        self._state = NEW
        self._status: dict[str, Any] | None = None
        self._result: Any = None
        self._exception: BaseException | None = None
        self._decoded = False
        self._read = False  # result handed to the user by get_result
        self._order = 0  # submission order in its executor
        self._executor: FutureOwner | None = None
        self._secret: bytes | None = None
        self._lock = threading.Lock()
        self.stats: dict[str, Any] = {}
        self.internal = False  # map calls feeding a reducer are not returned by get_result()
        self.attempts = 1  # invocations of this call so far (retries and speculative copies)
        self._inflight = 0  # attempts started whose outcome is not known yet
        self._seen_status_keys: set[str] = set()

    # -- identity -------------------------------------------------------------------------------
    @property
    def job_key(self) -> str:
        """The call's job, as ``"<executor_id>/<job_id>"``."""
        return f"{self.executor_id}/{self.job_id}"

    @property
    def key(self) -> tuple[str, str]:
        """The call's identity: the pair (:attr:`job_key`, ``call_id``)."""
        return (self.job_key, self.call_id)

    def __repr__(self) -> str:
        return f"<ResponseFuture {self.job_key}/{self.call_id} {self._state}>"

    def __getstate__(self) -> dict[str, Any]:
        # never the key: a call that returns futures has them stored in its status record, and
        # the client that adopts them derives their key from its own
        return {k: v for k, v in self.__dict__.items() if k not in ("_executor", "_lock", "_secret", "_callbacks")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._executor = None
        self._secret = None
        self._lock = threading.Lock()

    # -- state ----------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        """The call's state: ``new``, ``invoked``, ``running``, ``success`` or ``error``."""
        return self._state

    @property
    def ready(self) -> bool:
        """The call finished (success or error) and its status is known on the client."""
        return self._state in (SUCCESS, ERROR)

    @property
    def done(self) -> bool:
        """The call finished and its outcome was read on the client (or it failed)."""
        return self._state == ERROR or (self._state == SUCCESS and self._decoded)

    @property
    def error(self) -> bool:
        """The call failed (its exception is re-raised by ``result()``)."""
        return self._state == ERROR

    @property
    def success(self) -> bool:
        """The call finished without raising (its result may not have been read yet)."""
        return self._state == SUCCESS

    # the peers' other state names (Lithops, PyWren for IBM Cloud)
    @property
    def new(self) -> bool:
        """The call was not invoked yet."""
        return self._state == NEW

    @property
    def invoked(self) -> bool:
        """The call was invoked and has not started on a worker yet."""
        return self._state == INVOKED

    @property
    def running(self) -> bool:
        """The call started on a worker and has not finished."""
        return self._state == RUNNING

    @property
    def futures(self) -> bool:
        """The call returned futures (their results are what ``result()`` returns)."""
        return bool(self._status and self._status.get("futures"))

    def _mark(self, state: str) -> None:
        with self._lock:
            if self._state in (SUCCESS, ERROR):
                return
            if state == RUNNING and self._state == RUNNING:
                return
            self._state = state
            if state == INVOKED:
                self.stats.setdefault("host_submit_tstamp", time.time())

    def _set_status(self, status: dict[str, Any]) -> bool:
        """Record the worker's status. Returns False when the future already finished."""
        with self._lock:
            if self._state in (SUCCESS, ERROR):
                return False
            self._status = status
            stats = self.stats
            stats.update(status.get("stats") or {})
            stats["host_status_done_tstamp"] = time.time()
            for name, start, end in (("worker_exec_time", "worker_start_tstamp", "worker_end_tstamp"),
                                     ("worker_func_exec_time", "worker_func_start_tstamp", "worker_func_end_tstamp")):
                if start in stats and end in stats:  # the durations Lithops reports
                    stats[name] = stats[end] - stats[start]
            self._state = SUCCESS if status.get("success") else ERROR
            return True

    def _set_exception(self, exc: BaseException, kind: str = "system") -> bool:
        with self._lock:
            if self._state in (SUCCESS, ERROR):
                return False
            self._status = {"success": False, "error_kind": kind, "exc_message": str(exc)}
            self._exception = exc
            self._decoded = True
            self.stats["host_status_done_tstamp"] = time.time()
            self._state = ERROR
            return True

    @property
    def error_kind(self) -> str | None:
        """How a failed call failed: ``user`` (the function raised), ``timeout``, ``worker_died``
        or ``system``; ``None`` while the call has not failed (or when the worker did not say)."""
        return (self._status or {}).get("error_kind")

    # -- results --------------------------------------------------------------------------------
    def _decode(self) -> None:
        with self._lock:
            if self._decoded or self._status is None:
                return
            status = self._status
        if status.get("success"):
            data = status.get("result")
            try:
                if "result_error" in status:  # streamed by the pool, and not readable here
                    raise status["result_error"]
                if "result_value" in status:  # streamed by the pool, unpickled as it arrived
                    with self._lock:
                        self._result = status.pop("result_value")
                        self._decoded = True
                    self.stats["host_result_done_tstamp"] = time.time()
                    return
                if data is None and status.get("result_key"):
                    key, size = status["result_key"], (status.get("stats") or {}).get("func_result_size")
                    blob = serialize.read_signed(self._storage(), self.bucket, key, "a stored result", size)
                    data = serialize.verify(self._secret_bytes(), blob, "a stored result", key)
                if data is None:
                    with self._lock:
                        if self._decoded:  # another thread decoded it (and let go of its bytes)
                            return
                    raise SerializationError(f"the status of call {self.call_id} of job {self.job_key} holds no result")
                value = serialize.loads(data, f"the result of call {self.call_id}")
                del data
            except (SerializationError, StorageError) as refused:  # refused or unreadable: this call fails, not the others
                if isinstance(refused, StorageNoSuchKeyError):
                    refused = StorageNoSuchKeyError(
                        f"the result of call {self.call_id} of job {self.job_key} is no longer in storage: the "
                        "executor's data was cleaned (clean(), or closing it) before the result was read")
                with self._lock:
                    self._exception = refused
                    self._state = ERROR
                    self._decoded = True
                return
            self.stats["host_result_done_tstamp"] = time.time()
            with self._lock:
                self._result = value
                self._decoded = True
                status.pop("result", None)  # decoded: do not hold its bytes as well
        else:
            exc = rebuild_exception(status)
            with self._lock:
                self._exception = exc
                self._decoded = True

    def _storage(self) -> Any:
        if self._executor is None:
            raise RuntimeError(
                "this future is not attached to an executor: pass it to an executor's "
                "get_result() or wait()"
            )
        return self._executor.storage_backend

    def _secret_bytes(self) -> bytes:
        if self._secret is None:
            raise RuntimeError("this future has no key to verify its result with")
        return self._secret

    def exception(self) -> BaseException | None:
        """The exception the call failed with (rebuilt on the client, with the remote traceback as
        its cause), without waiting: ``None`` when the call succeeded or has not finished yet."""
        if not self.ready:
            return None
        self._decode()
        return self._exception

    @user_facing
    def result(self, throw_except: bool = True, timeout: float | None = None) -> Any:
        """Wait for the call and return its value (or re-raise its exception).

        With ``throw_except=False`` a failed call returns ``None``. If the function returned
        futures of its own executor, their results are waited for and returned instead.

        :param throw_except: re-raise the call's exception (default) or return ``None`` for it.
        :param timeout: seconds to wait for the call (default: no limit).
        :raises WaitTimeoutError: when the call has not finished after ``timeout`` seconds.
        :raises RuntimeError: when the future is not attached to an executor.
        """
        if not self.ready:
            if self._executor is None:
                raise RuntimeError("this future is not attached to an executor; use get_result()")
            self._executor.wait([self], throw_except=False, timeout=timeout, show_progressbar=False)
            if not self.ready:
                raise WaitTimeoutError(f"call {self.call_id} of job {self.job_key} is not finished after {timeout} s")
        self._decode()
        if self._state == ERROR:
            if throw_except:
                assert self._exception is not None
                raise _mark_outcome(self._exception)
            return None
        if self._status and self._status.get("futures") and self._executor is not None:
            return self._executor.resolve_nested(self._result, throw_except, timeout)
        return self._result

    def logs(self) -> str:
        """What the call printed (stdout and stderr)."""
        return (self._status or {}).get("logs", "")

    # -- callbacks and asyncio ------------------------------------------------------------------
    def add_done_callback(self, fn: Callable[[ResponseFuture], Any]) -> None:
        """Call ``fn(future)`` once the call finished (at once when it already has).

        :param fn: a callable taking this future; it runs in the thread that learned the
            outcome (a monitor's or the backend's), so it should be quick. Its exceptions are
            logged and ignored, as in :meth:`concurrent.futures.Future.add_done_callback`.
        """
        with self._lock:
            callbacks: list[Callable[[ResponseFuture], Any]] | None = self.__dict__.get("_callbacks", [])
            if callbacks is not None:  # None: the callbacks already ran
                self.__dict__["_callbacks"] = callbacks + [fn]
                return
        self._call_back(fn)

    def _notify_done(self) -> None:
        """Run the done callbacks (the call tracker calls this once the future is settled)."""
        with self._lock:
            callbacks = self.__dict__.get("_callbacks") or []
            self.__dict__["_callbacks"] = None
        for fn in callbacks:
            self._call_back(fn)

    def _call_back(self, fn: Callable[[ResponseFuture], Any]) -> None:
        try:
            fn(self)
        except Exception:
            logger.exception("a done callback of %r raised", self)

    def __await__(self) -> Generator[Any, None, Any]:
        """``await future`` in asyncio code: waits without blocking the event loop, then
        returns the result (or raises the call's exception)."""
        import asyncio

        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not ready.done():
                ready.set_result(None)

        def wake(_: ResponseFuture) -> None:
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # the loop is gone (the await was cancelled and its loop ended)
                pass

        __tracebackhide__ = True  # noqa: F841 - read by pytest and IPython
        if not self.ready and self._executor is not None:  # unattached: result() explains
            self.add_done_callback(wake)
            yield from ready.__await__()
        try:  # decoding may read a stored result: do it off the event loop
            return (yield from loop.run_in_executor(None, self.result).__await__())
        except BaseException as call_failure:
            if not is_outcome(call_failure):
                raise  # wren's own error (a bug, bad input): every frame stays
            raise without_plumbing(call_failure)  # noqa: B904 (the call's exception, re-raised by wren)
