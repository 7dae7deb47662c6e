"""Running calls under supervision inside a container: a warm pool of worker processes.

The container entry point (:mod:`wren.worker.__main__`) hands each call to the same pool the
localhost backend uses (:class:`wren.worker.pool.WorkerPool`): fresh interpreters started
once, which keep their imports, storage clients and unpickled functions warm between calls. The
pool enforces the timeout by killing the worker and notices a worker that dies (out of memory,
``os._exit``, a signal); the supervisor then writes that call's status record itself, so every
call ends with a status in storage whatever happened to it.

Workers are started with fork+exec, never a bare fork, so no connection or lock of this
process is shared with them.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from wren.errors import error_kind
from wren.records import Call, Job
from wren.worker.pool import Task, WorkerPool
from wren.worker.runtime import exception_payload, get_runtime

logger = logging.getLogger("wren.worker")


def pool_size() -> int:
    return int(os.environ.get("WREN_WORKER_CONCURRENCY", "0") or 0) or (os.cpu_count() or 1)


def get_pool() -> WorkerPool:
    pool = WorkerPool.shared(pool_size(), 1)
    pool.wait_started()
    return pool


class _Calls:
    """The result channel of one payload: collects a summary per call."""

    def __init__(self, job: Job, calls: list[Call]):
        self.job = job
        self.attempts = {c.call_id: c.attempt for c in calls}
        self.n = len(calls)
        self.summaries: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self.done = threading.Event()
        self.lock = threading.Lock()

    def _record(self, call_id: str, summary: dict[str, Any]) -> None:
        with self.lock:
            self.summaries[call_id] = summary
            if len(self.summaries) >= self.n:
                self.done.set()

    def deliver(self, status: dict[str, Any]) -> None:
        self.statuses[status["call_id"]] = status
        self._record(status["call_id"], {"call_id": status["call_id"], "ok": bool(status.get("success"))})

    def running(self, job_key: str, call_id: str) -> None:
        pass

    def failed(self, job_key: str, call_id: str, error: BaseException) -> None:
        now = time.time()
        runtime = get_runtime()
        status = {
            "job_key": job_key,
            "call_id": call_id,
            "attempt": self.attempts.get(call_id, 0),
            "success": False,
            "futures": False,
            "error_kind": error_kind(error),
            "logs": "",
            "stats": {"worker_start_tstamp": now, "worker_end_tstamp": now, "worker_host": runtime.host},
            **exception_payload(error),
        }
        try:
            runtime.write_status(self.job, status)
        except Exception as exc:  # the client's own deadline watchdog will report it
            logger.error("could not write the status of call %s: %s", call_id, exc)
        publisher = runtime.publisher_for(self.job)
        if publisher is not None:
            runtime._publish(publisher, self.job, "finish", status)
        self.statuses[call_id] = status
        self._record(call_id, {"call_id": call_id, "ok": False, "error": str(error)})


def run_calls(
    job: Job | dict[str, Any], calls: list[Call] | list[dict[str, Any]], return_status: bool = False
) -> list[dict[str, Any]]:
    """Run ``calls`` of ``job`` on the warm pool and wait for all; returns a summary per call,
    or with ``return_status`` each call's full status record. The records are in storage
    afterwards too, whatever happened to the workers."""
    pool = get_pool()
    job = Job.from_wire(job).replace(store_results=True)
    records = [Call.from_wire(c) for c in calls]
    channel = _Calls(job, records)
    owner = f"payload-{id(channel)}"
    pool.submit(owner, pool.size, [Task(owner, job, c, channel) for c in records])
    channel.done.wait()
    pool.forget_owner(owner)
    source = channel.statuses if return_status else channel.summaries
    return [source[c.call_id] for c in records]


def run_supervised(job: Job | dict[str, Any], call: Call | dict[str, Any]) -> dict[str, Any]:
    """Run one call (see :func:`run_calls`)."""
    return run_calls(job, [Call.from_wire(call)])[0]
