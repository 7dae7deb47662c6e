"""Running calls under supervision inside a container: a warm pool of worker processes.

The container entry point (:mod:`wren.worker.__main__`) hands each call to the same pool the
localhost backend uses (:class:`wren.worker.pool.WorkerPool`): worker processes started
once (forks of a template interpreter), which keep their imports, storage clients and unpickled functions warm between calls. The
pool enforces the timeout by killing the worker and notices a worker that dies (out of memory,
``os._exit``, a signal); the supervisor then writes that call's status record itself, so every
call ends with a status in storage whatever happened to it.

Workers are never forks of this process (the template is started with fork+exec), so no
connection or lock of this process is shared with them.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from wren.errors import error_kind
from wren.records import Call, Job
from wren.worker.pool import Task, WorkerPool
from wren.worker.runtime import exception_payload, get_runtime

logger = logging.getLogger("wren.worker")


#: MiB of a container's memory left to the entry point itself, and the least each worker of the
#: pool gets: a 256 MiB container runs 2 workers, a 128 MiB one 1
ENTRYPOINT_MEMORY_MIB = 64
WORKER_MEMORY_MIB = 96
_MIB = 1024 * 1024
#: cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages); anything above this is none
_V1_UNLIMITED = 1 << 60


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _own_cgroups(proc_cgroup: str) -> dict[str, str]:
    """Controller (``""`` for cgroup v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                out[controller] = parts[2]
    return out


def _candidates(base: str, path: str) -> list[str]:
    """``base/path`` and each of its ancestors up to ``base`` (a limit anywhere above applies;
    inside a container's cgroup namespace the path is "/" and ``base`` is the container's)."""
    out = []
    parts = [p for p in path.split("/") if p]
    for i in range(len(parts), -1, -1):
        out.append(os.path.join(base, *parts[:i]))
    return out


def container_limits(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> tuple[float | None, int | None]:
    """(CPUs, memory in bytes) this process's cgroup allows; None where there is no limit.

    cgroup v2: ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) and ``memory.max``
    (bytes or ``"max"``). cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: none)
    and ``memory.limit_in_bytes``. The smallest limit of the cgroup and its ancestors wins."""
    own = _own_cgroups(proc_cgroup)
    cpus: float | None = None
    memory: int | None = None
    if os.path.exists(os.path.join(root, "cgroup.controllers")):  # v2, unified
        for d in _candidates(root, own.get("", "/")):
            text = _read(os.path.join(d, "cpu.max"))
            if text:
                quota, _, period = text.partition(" ")
                if quota != "max" and period:
                    value = int(quota) / int(period)
                    cpus = value if cpus is None else min(cpus, value)
            text = _read(os.path.join(d, "memory.max"))
            if text and text != "max":
                memory = int(text) if memory is None else min(memory, int(text))
        return cpus, memory
    for controller, names in (("cpu", ("cpu,cpuacct", "cpu", "cpuacct,cpu")), ("memory", ("memory",))):
        for name in names:
            base = os.path.join(root, name)
            if not os.path.isdir(base):
                continue
            for d in _candidates(base, own.get(controller, "/")):
                if controller == "cpu":
                    quota_us, period_us = _read(os.path.join(d, "cpu.cfs_quota_us")), _read(os.path.join(d, "cpu.cfs_period_us"))
                    if quota_us and period_us and int(quota_us) > 0 and int(period_us) > 0:
                        value = int(quota_us) / int(period_us)
                        cpus = value if cpus is None else min(cpus, value)
                else:
                    text = _read(os.path.join(d, "memory.limit_in_bytes"))
                    if text and int(text) < _V1_UNLIMITED:
                        memory = int(text) if memory is None else min(memory, int(text))
            break
    return cpus, memory


def pool_size(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> int:
    """Workers in the container's pool: ``WREN_WORKER_CONCURRENCY`` when set; else the CPUs this
    process may use (its CPU quota, rounded up, where one is set: a pod with ``cpu: 500m`` on a
    64-core node gets 1, not 64), and no more than its memory limit holds (``WORKER_MEMORY_MIB``
    each after ``ENTRYPOINT_MEMORY_MIB`` for the entry point: a 256 MiB action gets 2)."""
    forced = int(os.environ.get("WREN_WORKER_CONCURRENCY", "0") or 0)
    if forced > 0:
        return forced
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    cpus, memory = container_limits(root, proc_cgroup)
    if cpus is not None:
        n = min(n, max(1, math.ceil(cpus - 1e-9)))
    if memory is not None:
        n = min(n, max(1, (memory // _MIB - ENTRYPOINT_MEMORY_MIB) // WORKER_MEMORY_MIB))
    return max(1, n)


_pool: WorkerPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> WorkerPool:
    """The entry point's warm pool (its own: results stay bytes, for the records it forwards)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool._closed:
            _pool = WorkerPool(pool_size(), 1, stream_results=False)
        pool = _pool
    pool.wait_started()
    return pool


class _Calls:
    """The result channel of one payload: collects a summary per call."""

    def __init__(self, job: Job, calls: list[Call], on_status: Callable[[dict[str, Any]], None] | None = None):
        self.job = job
        self.attempts = {c.call_id: c.attempt for c in calls}
        self.n = len(calls)
        self.summaries: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.on_status = on_status

    def _record(self, call_id: str, summary: dict[str, Any]) -> None:
        with self.lock:
            self.summaries[call_id] = summary
            if len(self.summaries) >= self.n:
                self.done.set()

    def deliver(self, status: dict[str, Any]) -> None:
        self.statuses[status["call_id"]] = status
        if self.on_status is not None:
            self.on_status(status)
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
            if self.job.store_results:
                runtime.write_status(self.job, status)
        except Exception as exc:  # the client's own deadline watchdog will report it
            logger.error("could not write the status of call %s: %s", call_id, exc)
        publisher = runtime.publisher_for(self.job)
        if publisher is not None:
            runtime._publish(publisher, self.job, "finish", status)
        self.statuses[call_id] = status
        if self.on_status is not None:
            self.on_status(status)
        self._record(call_id, {"call_id": call_id, "ok": False, "error": str(error)})


def run_calls(
    job: Job | dict[str, Any], calls: list[Call] | list[dict[str, Any]], return_status: bool = False
) -> list[dict[str, Any]]:
    """Run ``calls`` of ``job`` on the warm pool and wait for all; returns a summary per call,
    or with ``return_status`` each call's full status record. The records are in storage
    afterwards too, whatever happened to the workers."""
    with started_calls(job, calls) as (channel, records):
        channel.done.wait()
    source = channel.statuses if return_status else channel.summaries
    return [source[c.call_id] for c in records]


@contextlib.contextmanager
def started_calls(
    job: Job | dict[str, Any], calls: list[Call] | list[dict[str, Any]],
    on_status: Callable[[dict[str, Any]], None] | None = None, *, store: bool = True,
) -> Iterator[tuple[_Calls, list[Call]]]:
    """Start ``calls`` of ``job`` on the warm pool; inside the block they run, and
    ``on_status(record)`` hears of each as it ends (from the pool's dispatcher thread: keep it
    quick, e.g. ``queue.put``). Leaving the block drops the calls that have not started (wait
    for ``channel.done`` first to run them all). Status records go to storage as well, unless
    ``store`` is false: then only where the job asks (``job.store_results``), for a caller
    that hands every record over itself."""
    pool = get_pool()
    job = Job.from_wire(job)
    if store:
        job = job.replace(store_results=True)
    records = [Call.from_wire(c) for c in calls]
    channel = _Calls(job, records, on_status)
    owner = f"payload-{id(channel)}"
    pool.submit(owner, pool.size, [Task(owner, job, c, channel) for c in records])
    try:
        yield channel, records
    finally:
        pool.forget_owner(owner)


def run_supervised(job: Job | dict[str, Any], call: Call | dict[str, Any]) -> dict[str, Any]:
    """Run one call (see :func:`run_calls`)."""
    return run_calls(job, [Call.from_wire(call)])[0]
