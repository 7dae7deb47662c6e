"""Reporting: what finished calls printed, plots of a run, and per-job summaries."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from collections.abc import Sequence

from wren.client import journal
from wren.client.calls import SettledCall
from wren.errors import InvalidInputError
from wren.future import ResponseFuture

logger = logging.getLogger("wren.executor")


class JobLog:
    """Logs (INFO) when a job's last call settles: calls, failed, wall time. ``jobs`` is the
    executor's job table (``calls``, ``func``, ``submitted`` per job key)."""

    def __init__(self, jobs: dict[str, dict[str, Any]]):
        self._jobs = jobs
        self._counts: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def finished(self, future: ResponseFuture) -> None:
        """One call of a job settled (exactly once per call)."""
        meta = self._jobs.get(future.job_key)
        if meta is None:
            return
        with self._lock:
            counts = self._counts.setdefault(future.job_key, [0, 0])
            counts[0] += 1
            counts[1] += int(future.error)
            done, failed = counts
        if done == meta["calls"]:
            logger.info("job %s: %d call(s) of %s done, %d failed, %.1f s", future.job_key, done, meta["func"],
                        failed, time.time() - meta["submitted"])


def save_logs(futures: Sequence[ResponseFuture | SettledCall]) -> None:
    """Keep what finished calls printed under ``~/.wren/logs`` for ``wren logs``."""
    by_job: dict[tuple[str, str], list[ResponseFuture | SettledCall]] = {}
    for f in futures:
        if f.ready:
            by_job.setdefault((f.executor_id, f.job_id), []).append(f)
    for (executor_id, job_id), fs in by_job.items():
        journal.save_logs(executor_id, job_id, [(f.call_id, f.logs()) for f in fs])


def plot(futures: Sequence[ResponseFuture | SettledCall], dst: str | None, functions: dict[str, str] | None = None) -> list[Any]:
    """Timeline and concurrency histogram of the finished ``futures`` as two matplotlib
    Figures (PNG files too with ``dst``); ``functions`` names each job's function."""
    from wren.client.plots import plot_futures

    fs = [f for f in futures if f.ready]
    if not fs:
        raise InvalidInputError("no finished calls to plot: wait for some calls first")
    return plot_futures(fs, dst, functions)


def job_summary(jobs: dict[str, dict[str, Any]], futures_of: Any, price_per_gb_second: float | None,
                memory_mb: int | None) -> list[dict[str, Any]]:
    """Per job: calls, successes, failures and phase times (seconds), and a cost estimate when
    the backend has a price. ``futures_of(job_key)`` gives a job's futures."""
    rows = []
    for job_key, meta in jobs.items():
        fs = futures_of(job_key)
        ok = [f for f in fs if f.success]
        err = [f for f in fs if f.error]
        exec_times = [
            f.stats["worker_func_end_tstamp"] - f.stats["worker_func_start_tstamp"]
            for f in fs if "worker_func_end_tstamp" in f.stats and "worker_func_start_tstamp" in f.stats
        ]
        ends = [f.stats.get("host_status_done_tstamp", 0) for f in fs if f.ready]
        row = {
            "job": job_key, "function": meta["func"], "kind": meta["kind"], "calls": len(fs),
            "success": len(ok), "error": len(err), "pending": len(fs) - len(ok) - len(err),
            "total_time": (max(ends) - meta["submitted"]) if ends else None,
            "exec_time_sum": sum(exec_times),
            "exec_time_mean": (sum(exec_times) / len(exec_times)) if exec_times else None,
        }
        if price_per_gb_second is not None:
            row["estimated_cost"] = sum(exec_times) * (memory_mb or 256) / 1024 * price_per_gb_second
        rows.append(row)
    return rows
