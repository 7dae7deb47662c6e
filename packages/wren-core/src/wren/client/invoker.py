"""The invoker: hands calls to a backend with at most ``max_workers`` of them in flight.

Calls from every job of an executor wait in one FIFO queue; a slot frees when a call's status
arrives (a token bucket refilled as calls finish). Deliveries run on a pool of threads so that
many HTTP invocations proceed at once. A batch that the backend cannot deliver fails its
futures with the backend's error.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading

from wren.compute.base import ComputeBackend, ResultChannel
from wren.records import Call, Job

logger = logging.getLogger("wren.invoker")


class Invoker:
    def __init__(self, backend: ComputeBackend, max_workers: int, channel: ResultChannel, threads: int | None = None):
        self.backend = backend
        self.max_workers = max_workers
        self.channel = channel
        self._queue: collections.deque[tuple[Job, Call]] = collections.deque()
        self._in_flight: set[tuple[str, str]] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._threads = threads or max(4, min(64, max_workers))
        self._pool = concurrent.futures.ThreadPoolExecutor(self._threads, thread_name_prefix="wren-invoke")
        self._thread = threading.Thread(target=self._loop, name="wren-invoker", daemon=True)
        self._thread.start()

    def submit(self, job: Job, calls: list[Call]) -> None:
        with self._cond:
            self._queue.extend((job, c) for c in calls)
            self._cond.notify_all()

    def release(self, job_key: str, call_id: str) -> None:
        with self._cond:
            if (job_key, call_id) in self._in_flight:
                self._in_flight.discard((job_key, call_id))
                self._cond.notify_all()

    def cancel(self, job_key: str) -> int:
        with self._cond:
            before = len(self._queue)
            self._queue = collections.deque(x for x in self._queue if x[0].job_key != job_key)
            return before - len(self._queue)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._queue or len(self._in_flight) >= self.max_workers):
                    self._cond.wait()
                if self._stopped:
                    return
                free = self.max_workers - len(self._in_flight)
                batch_job = self._queue[0][0]
                batch: list[Call] = []
                while self._queue and len(batch) < free and self._queue[0][0] is batch_job and len(batch) < 256:
                    _, call = self._queue.popleft()
                    batch.append(call)
                    self._in_flight.add((batch_job.job_key, call.call_id))
            # split into pieces so several delivery threads work at once
            step = max(1, -(-len(batch) // self._threads))
            for i in range(0, len(batch), step):
                self._pool.submit(self._deliver, batch_job, batch[i: i + step])

    def _deliver(self, job: Job, calls: list[Call]) -> None:
        try:
            self.backend.invoke(job, calls, self.channel)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes the futures' error
            logger.debug("invocation of %d calls of %s failed: %s", len(calls), job.job_key, exc)
            for call in calls:
                self.channel.failed(job.job_key, call.call_id, exc)
