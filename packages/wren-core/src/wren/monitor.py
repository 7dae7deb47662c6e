"""Monitors: how the client learns that calls finished.

A :class:`Monitor` watches futures and hands each status record to the executor. The default,
:class:`StorageMonitor`, lists each job's prefix (one request for many calls), fetches new status
records in parallel, and backs off between listings when nothing changes (from 20 ms up to
``monitor_interval``); it wakes at once when new futures are added. A backend with its own
channel (the localhost pool's pipes) delivers records directly and the monitor only covers
futures that channel does not.
"""
from __future__ import annotations

import abc
import concurrent.futures
import logging
import pickle
import threading
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Iterable

from wren import serialize
from wren.worker.runtime import parse_status_key

if TYPE_CHECKING:
    from wren.future import ResponseFuture

logger = logging.getLogger("wren.monitor")


class Monitor(abc.ABC):
    """Learns of finished calls. Implementations call ``on_status(future, record)``."""

    def __init__(
        self,
        storage: Any,
        on_status: Callable[[ResponseFuture, dict[str, Any]], None],
        on_error: Callable[[ResponseFuture, BaseException], None],
        interval: float,
        config: Any = None,
    ):
        self.storage = storage
        self.on_status = on_status
        self.on_error = on_error
        self.interval = interval
        self.config = config

    @abc.abstractmethod
    def watch(self, futures: Iterable[ResponseFuture]) -> None:
        """Start watching these futures (until each is ready)."""

    def job_events(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """What workers need to report events of ``job`` to this monitor (sent in the
        invocation as ``job["events"]``), or ``None`` when workers report through storage only.
        Must hold ``"monitor"``: this monitor's registered name."""
        return None

    def poke(self) -> None:
        """Check again soon (a waiter is impatient)."""

    def stop(self) -> None:
        """Stop watching; no calls to ``on_status`` afterwards."""

    @classmethod
    def worker_publisher(cls, events: dict[str, Any]) -> EventPublisher | None:
        """On the worker: the publisher for ``job["events"]`` (``None``: nothing to publish)."""
        return None


class EventPublisher(abc.ABC):
    """Worker side of a push monitor. Failures must never fail the call: storage stays the
    durable record, so a publisher that cannot reach its broker only logs."""

    @abc.abstractmethod
    def publish(self, job: dict[str, Any], event: str, status: dict[str, Any] | None) -> None:
        """``event`` is ``"start"`` (status ``None``) or ``"finish"`` (the signed status
        record's fields)."""

    def close(self) -> None:
        """Release the connection (at process exit)."""


class StorageMonitor(Monitor):
    """Lists job prefixes in storage to find status records."""

    MIN_INTERVAL = 0.02

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._pending: dict[str, dict[str, ResponseFuture]] = {}  # job prefix -> call -> future
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.list_requests = 0

    def watch(self, futures: Iterable[ResponseFuture]) -> None:
        with self._cond:
            for f in futures:
                if not f.ready:
                    self._pending.setdefault(f.job_prefix, {})[f.call_id] = f
            if self._thread is None and self._pending and not self._stopped:
                self._thread = threading.Thread(target=self._loop, name="wren-monitor", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def poke(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _fetch(self, future: ResponseFuture, key: str) -> None:
        try:
            blob = self.storage.get_object(future.bucket, key)
            record = pickle.loads(serialize.verify(future._secret_bytes(), blob, "a status record"))
        except Exception as exc:  # a bad record must not stall the rest
            self.on_error(future, exc)
            return
        self.on_status(future, record)

    def _loop(self) -> None:
        while True:
            try:
                self._poll_until_idle()
                return
            except Exception:  # a bug here must not leave waiters hanging in silence
                logger.exception("the storage monitor failed; restarting it in 1 s")
                with self._cond:
                    if self._stopped:
                        return
                    self._cond.wait(1.0)

    def _poll_until_idle(self) -> None:
        delay = self.MIN_INTERVAL
        while True:
            with self._cond:
                # drop what finished through another channel
                for prefix in list(self._pending):
                    calls = self._pending[prefix]
                    for cid in [c for c, f in calls.items() if f.ready]:
                        del calls[cid]
                    if not calls:
                        del self._pending[prefix]
                if self._stopped:
                    return
                if not self._pending:
                    self._cond.wait(timeout=1.0)
                    if not self._pending and not self._stopped:
                        self._thread = None
                        return
                    continue
                work = {p: dict(c) for p, c in self._pending.items()}
            progressed = False
            for prefix, calls in work.items():
                try:
                    self.list_requests += 1
                    keys = self.storage.list_keys(next(iter(calls.values())).bucket, prefix + "/")
                except Exception as exc:
                    logger.warning("listing %s failed (%s); retrying", prefix, exc)
                    continue
                found = []
                for key in keys:
                    parsed = parse_status_key(prefix, key)
                    if parsed is None:
                        continue
                    f = calls.get(parsed[0])
                    if f is not None and not f.ready and key not in f._seen_status_keys:
                        f._seen_status_keys.add(key)
                        found.append((f, key))
                if found:
                    progressed = True
                    with self._cond:
                        for f, _ in found:
                            self._pending.get(prefix, {}).pop(f.call_id, None)
                    if self._pool is None:
                        self._pool = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="wren-fetch")
                    list(self._pool.map(lambda fk: self._fetch(*fk), found))
            delay = self.MIN_INTERVAL if progressed else min(delay * 1.5, self.interval)
            with self._cond:
                if not self._stopped:
                    self._cond.wait(timeout=delay)
