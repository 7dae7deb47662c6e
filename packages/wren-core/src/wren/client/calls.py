"""The calls of one executor: its futures, and the channel backends and monitors report on.

:class:`CallTracker` is the :class:`~wren.compute.base.ResultChannel` an executor gives its
backend: ``deliver`` (a status record), ``running`` and ``failed`` find the call's future,
let :mod:`~wren.client.attempts` decide whether a failure is final, settle the future, and
tell whoever waits (:mod:`~wren.client.waiting`).
"""
from __future__ import annotations

import pickle

import threading
import time
from typing import Any, Protocol
from collections.abc import Callable

from wren.errors import error_kind
from wren.future import RUNNING, ResponseFuture


class Listener(Protocol):
    def finished(self, future: ResponseFuture) -> None: ...


class CallTracker:
    """Futures by call, and the result channel that settles them. Thread-safe.

    ``attempt_failed(future, kind, exc_type, message)`` returns True when the call goes on
    (a retry or another copy); ``on_finished(future)`` runs once per settled call.
    """

    def __init__(self, attempt_failed: Callable[[ResponseFuture, str, Any, str], bool],
                 on_finished: Callable[[ResponseFuture], None]):
        self.futures: list[ResponseFuture] = []
        self._by_key: dict[tuple[str, str], ResponseFuture] = {}
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
            if listed:
                self.futures.extend(futures)

    def get(self, job_key: str, call_id: str) -> ResponseFuture | None:
        return self._by_key.get((job_key, call_id))

    def of_job(self, job_key: str) -> list[ResponseFuture]:
        return [f for f in self.futures if f.job_key == job_key]

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
