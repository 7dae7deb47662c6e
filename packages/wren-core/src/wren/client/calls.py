"""The calls of one executor: its futures, and the channel backends and monitors report on.

:class:`CallTracker` is the :class:`~wren.compute.base.ResultChannel` an executor gives its
backend: ``deliver`` (a status record), ``running`` and ``failed`` find the call's future,
let :mod:`~wren.client.attempts` decide whether a failure is final, settle the future, and
tell whoever waits (:mod:`~wren.client.waiting`).
"""
from __future__ import annotations

import itertools
import pickle
import threading
import time
import weakref
from typing import Any, Protocol
from collections.abc import Callable

from wren.errors import error_kind
from wren.future import RUNNING, ResponseFuture


class Listener(Protocol):
    def finished(self, future: ResponseFuture) -> None: ...


class SettledCall:
    """What an executor keeps of a finished call once its result was handed out and the
    executor lets go of its future: what :meth:`~wren.FunctionExecutor.job_summary`,
    :meth:`~wren.FunctionExecutor.plot` and the saved logs read, not the result."""

    __slots__ = ("executor_id", "job_id", "call_id", "stats", "success", "error", "_logs")
    ready = True

    def __init__(self, f: ResponseFuture):
        self.executor_id, self.job_id, self.call_id = f.executor_id, f.job_id, f.call_id
        self.stats = f.stats
        self.success, self.error = f.success, f.error
        self._logs = f.logs()

    @property
    def job_key(self) -> str:
        return f"{self.executor_id}/{self.job_id}"

    def logs(self) -> str:
        return self._logs


class CallTracker:
    """Futures by call, and the result channel that settles them. Thread-safe.

    ``attempt_failed(future, kind, exc_type, message)`` returns True when the call goes on
    (a retry or another copy); ``on_finished(future)`` runs once per settled call.
    """

    def __init__(self, attempt_failed: Callable[[ResponseFuture, str, Any, str], bool],
                 on_finished: Callable[[ResponseFuture], None]):
        #: the futures held: those not finished, or whose results were not handed out yet
        self.futures: list[ResponseFuture] = []
        self._by_key: dict[tuple[str, str], ResponseFuture] = {}
        self._settled: list[SettledCall] = []  # futures let go of (see release)
        self._let_go: list[weakref.ref[ResponseFuture]] = []
        self._releasing: list[ResponseFuture] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._listeners: set[Listener] = set()
        self._attempt_failed = attempt_failed
        self._on_finished = on_finished

    # -- registry -------------------------------------------------------------------------------
    def add(self, futures: list[ResponseFuture], *, listed: bool = True) -> None:
        """Track ``futures``; ``listed=False`` tracks without adding them to :attr:`futures`
        (futures this executor adopted from a call's result)."""
        with self._cond:
            for f in futures:
                self._by_key.setdefault(f.key, f)
                f._order = next(self._order)
            if listed:
                self.futures.extend(futures)

    def get(self, job_key: str, call_id: str) -> ResponseFuture | None:
        return self._by_key.get((job_key, call_id))

    def of_job(self, job_key: str) -> list[ResponseFuture | SettledCall]:
        return [f for f in self.everything() if f.job_key == job_key]

    def listed(self) -> list[ResponseFuture]:
        """The futures held, and those let go of that the program still holds, in submission
        order (``FunctionExecutor.futures``)."""
        with self._cond:
            alive = [f for f in (r() for r in self._let_go) if f is not None]
            if len(alive) < len(self._let_go) // 2:
                self._let_go = [weakref.ref(f) for f in alive]
            return sorted([*alive, *self.futures], key=lambda f: f._order)

    def everything(self) -> list[ResponseFuture | SettledCall]:
        """Every call tracked: the futures held, and what is kept of those let go of."""
        with self._cond:
            return [*self._settled, *self.futures]

    def release(self, futures: list[ResponseFuture], now: bool = False) -> None:
        """The results of these finished ``futures`` were handed out: stop holding them (and
        their results: a long-lived executor would otherwise keep every result it ever
        returned), keeping a :class:`SettledCall` of each. Whoever holds a future still has
        it whole (and :meth:`listed` still lists it). Done in batches (``now``: at once)."""
        with self._cond:
            self._releasing.extend(f for f in futures if f.ready)
            n = len(self._releasing)
            if n and (now or n > max(64, len(self.futures) // 4) or n == len(self.futures)):
                gone = {id(f) for f in self._releasing}
                kept = []
                for f in self.futures:
                    if id(f) in gone:
                        self._settled.append(SettledCall(f))
                        self._let_go.append(weakref.ref(f))
                        if self._by_key.get(f.key) is f:
                            del self._by_key[f.key]
                    else:
                        kept.append(f)
                self.futures[:] = kept  # in place: the watchdog reads this list
                self._releasing.clear()

    def add_listener(self, listener: Listener) -> None:
        with self._cond:
            self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._cond:
            self._listeners.discard(listener)

    # -- the result channel ---------------------------------------------------------------------
    def deliver(self, status: dict[str, Any]) -> None:
        """A call's status record arrived through the backend's own channel."""
        f = self.get(status["job_key"], status["call_id"])
        if f is not None:
            self.on_status(f, status)

    def running(self, job_key: str, call_id: str) -> None:
        f = self.get(job_key, call_id)
        if f is not None:
            f._mark(RUNNING)
            f.stats.setdefault("host_running_tstamp", time.time())

    def failed(self, job_key: str, call_id: str, error: BaseException) -> None:
        """A call could not be delivered, or its worker died or timed out."""
        f = self.get(job_key, call_id)
        if f is None or f.ready:
            return
        kind = error_kind(error)
        if self._attempt_failed(f, kind, type(error), str(error)):
            return
        if f._set_exception(error, kind):
            self.finished(f)

    def fail_pending(self, error: BaseException) -> None:
        """Settle every call not finished yet with ``error`` (the executor closed)."""
        for f in [f for f in self.futures if not f.ready]:
            self.failed(f.job_key, f.call_id, error)

    # -- what monitors report -------------------------------------------------------------------
    def on_status(self, future: ResponseFuture, status: dict[str, Any]) -> None:
        if future.ready:
            return  # another attempt won already: exactly one result per call
        if not status.get("success") and self._attempt_failed(
            future, status.get("error_kind") or "user", exception_type(status), status.get("exc_message", "")
        ):
            return
        if future._set_status(status):
            self.finished(future)

    def on_monitor_error(self, future: ResponseFuture, exc: BaseException) -> None:
        if self._attempt_failed(future, "system", type(exc), str(exc)):
            return
        if future._set_exception(exc):
            self.finished(future)

    def finished(self, future: ResponseFuture) -> None:
        self._on_finished(future)
        with self._cond:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.finished(future)
        future._notify_done()  # the future's own done callbacks (add_done_callback, await)


def exception_type(status: dict[str, Any]) -> Any:
    """The class of a failed call's exception (so that ``retry_on`` matches its bases), or its
    qualified name when it cannot be rebuilt here."""
    if status.get("exception") is not None and status.get("error_kind", "user") == "user":
        try:
            return type(pickle.loads(status["exception"]))
        except Exception:  # noqa: BLE001 - a class this client lacks: match by name
            pass
    return status.get("exc_type") or ""
