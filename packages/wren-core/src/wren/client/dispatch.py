"""Dispatch: handing a job's calls to the compute backend and its futures to the monitor.

A backend that queues calls itself (``manages_concurrency``) gets them at once; any other gets
them through the :class:`~wren.client.invoker.Invoker`, which keeps at most ``max_workers`` in
flight. A backend with its own channel back (``delivers_results``, like the localhost pool's
pipes) needs no monitor unless the user chose a push monitor.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from wren.compute.base import ComputeBackend, ResultChannel
from wren.future import INVOKED, ResponseFuture
from wren.monitor import Monitor
from wren.records import Call, Job

logger = logging.getLogger("wren.executor")


class Dispatcher:
    """Starts calls (first attempts and later ones) of one executor. Thread-safe."""

    def __init__(self, compute: ComputeBackend, max_workers: int, channel: ResultChannel,
                 monitor: Monitor, direct: bool, make_storage_monitor: Any):
        self.compute = compute
        self.max_workers = max_workers
        self.channel = channel
        self.monitor = monitor
        #: the backend's own channel delivers statuses: the monitor is not needed for them
        self.direct = direct
        self._make_storage_monitor = make_storage_monitor
        self._storage_monitor: Monitor | None = None
        self._invoker: Any = None
        self._started = False
        self._lock = threading.RLock()

    def warm(self) -> None:
        """:meth:`start` in the background while the user prepares a job: a failure is only
        logged here (no thread prints a traceback); the first job raises it with its fix."""
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - reported when a job needs the backend
            logger.debug("warming the backend failed: %s", exc)

    def start(self) -> None:
        """Get the backend ready (warm the localhost pool); idempotent."""
        with self._lock:
            if self._started:
                return
            self.compute.start()
            if not self.compute.manages_concurrency:
                from wren.client.invoker import Invoker

                self._invoker = Invoker(self.compute, self.max_workers, self.channel,
                                        threads=self.compute.invoker_threads)
            self._started = True

    @property
    def pending(self) -> int:
        """Calls waiting in the invoker's queue for a free slot."""
        return self._invoker.pending if self._invoker is not None else 0

    def storage_monitor(self) -> Monitor:
        """A monitor that lists storage, for futures no direct channel reports on (futures
        returned by calls, reattached jobs)."""
        if not self.direct:
            return self.monitor
        with self._lock:
            if self._storage_monitor is None:
                self._storage_monitor = self._make_storage_monitor()
            return self._storage_monitor

    def send(self, job: Job, calls: list[Call], futures: list[ResponseFuture]) -> None:
        """Start the first attempt of every call of ``job``."""
        self.start()
        for f in futures:
            f._mark(INVOKED)
        if not self.direct:
            self.monitor.watch(futures)
        if self._invoker is not None:
            self._invoker.submit(job, calls)
            return
        try:
            self.compute.invoke(job, calls, self.channel)
        except BaseException as exc:
            for call in calls:
                self.channel.failed(job.job_key, call.call_id, exc)
            raise

    def resend(self, future: ResponseFuture, job: Job, call: Call, attempt: int) -> None:
        """Start another attempt of one call (a retry or a speculative copy)."""
        future.stats["host_submit_tstamp"] = time.time()
        future.stats.pop("host_running_tstamp", None)
        new_call = call.replace(attempt=attempt)
        if not self.direct:
            self.monitor.watch([future])
        if self._invoker is not None:
            self._invoker.release(future.job_key, future.call_id)
            self._invoker.submit(job, [new_call])
        else:
            self.compute.invoke(job, [new_call], self.channel)

    def release(self, future: ResponseFuture) -> None:
        """A call finished: its slot under ``max_workers`` is free."""
        if self._invoker is not None:
            self._invoker.release(future.job_key, future.call_id)

    def interrupted(self, fs: list[ResponseFuture]) -> int:
        """The user pressed Ctrl-C while waiting for ``fs``: drop their calls not started yet
        (queued here or on the backend) and say how many calls were cancelled."""
        pending = [f for f in fs if not f.ready]
        for job_key in sorted({f.job_key for f in pending}):
            if self._invoker is not None:
                self._invoker.cancel(job_key)
            try:
                self.compute.cancel(job_key)
            except Exception as exc:  # best effort: the interrupt goes on
                logger.debug("could not cancel %s: %s", job_key, exc)
        logger.warning("interrupted: %d call(s) not finished were cancelled (calls already running "
                       "may still finish on the backend)", len(pending))
        return len(pending)

    def close(self, owner: str) -> None:
        """Stop monitoring and invoking, and release the backend."""
        self.monitor.stop()
        if self._storage_monitor is not None:
            self._storage_monitor.stop()
        if self._invoker is not None:
            self._invoker.stop()
        owner_close = getattr(self.compute, "close_owner", None)
        if callable(owner_close):
            owner_close(owner)
        self.compute.close()
