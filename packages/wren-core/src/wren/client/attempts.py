"""Attempts: retries, speculative copies and the watchdog for lost calls.

Every attempt of a call writes its own status; the first result wins. A failed attempt is
retried (after a jittered, doubling back-off) when the failure is retryable and retries are
left: lost workers, timeouts, platform or storage errors, and the user's ``retry_on`` exception
types. With ``speculation`` a call running far longer than its job's median gets a backup
copy. The watchdog fails a call that sent nothing long after its timeout (its worker was lost
without anyone noticing), so that waiting never hangs.
"""
from __future__ import annotations

import logging
import pickle
import threading
import time
from typing import Any
from collections.abc import Callable

from wren import serialize
from wren.backoff import backoff
from wren.config import WrenConfig
from wren.keys import status_key
from wren.worker.runtime import exception_payload
from wren.errors import CallTimeoutError, InvalidInputError
from wren.future import ResponseFuture
from wren.records import Call, Job

logger = logging.getLogger("wren.executor")

#: Failures that are not the user's code: always retryable while retries are left.
RETRYABLE_KINDS = ("worker_died", "timeout", "system")


def exception_names(retry_on: Any) -> list[str]:
    """``retry_on`` as qualified exception names (classes or names accepted)."""
    if isinstance(retry_on, (str, type)):
        retry_on = [retry_on]
    names = []
    for item in retry_on:
        if isinstance(item, type) and issubclass(item, BaseException):
            names.append(f"{item.__module__}.{item.__qualname__}".replace("builtins.", ""))
        elif isinstance(item, str) and item:
            names.append(item)
        else:
            raise InvalidInputError(
                f"retry_on takes exception classes or their names, e.g. retry_on=[ConnectionError], got {item!r}"
            )
    return names



class Attempts:
    """The attempts of one executor's calls. ``launch(future, job, call, attempt)`` starts
    another attempt; ``is_closed()`` says the executor closed (no more attempts)."""

    #: seconds past a call's timeout (at least; 10 % of the timeout when more) after which a
    #: call that sent nothing is failed as lost
    LOST_GRACE = 30.0

    def __init__(self, config: WrenConfig, launch: Callable[[ResponseFuture, Job, Call, int], None],
                 is_closed: Callable[[], bool], storage: Any = None):
        self.config = config
        self.storage = storage  # where a lost call's status is written (see forget)
        self._launch = launch
        self._is_closed = is_closed
        # (job_key, call_id) -> (job, call) of calls not finished yet, for retries and copies
        self._records: dict[tuple[str, str], tuple[Job, Call]] = {}
        self._lock = threading.RLock()

    def track(self, job: Job, calls: list[Call], futures: list[ResponseFuture]) -> None:
        with self._lock:
            for call, f in zip(calls, futures, strict=False):
                self._records[f.key] = (job, call)

    def forget(self, future: ResponseFuture) -> None:
        """The call is settled. A call lost on the client's side (its worker died, it timed
        out, it could not be delivered) has no status in storage: write one there when the job
        keeps statuses, so that whoever reads them (a reducer waiting on its worker, a
        reattached client) learns of the failure at once instead of waiting out a timeout."""
        with self._lock:
            record = self._records.pop(future.key, None)
        lost = future.error and "stats" not in (future._status or {})
        if record is None or not lost or not record[0].store_results or self.storage is None or self._is_closed():
            return
        job, call = record
        error = future._exception or RuntimeError((future._status or {}).get("exc_message", "the call was lost"))
        now = time.time()
        status = {"job_key": job.job_key, "call_id": call.call_id, "attempt": future.attempts - 1,
                  "success": False, "futures": False, "error_kind": future.error_kind or "system", "logs": "",
                  "stats": {"worker_start_tstamp": now, "worker_end_tstamp": now, "lost_on_client": True},
                  **exception_payload(error)}
        key = status_key(job.prefix, call.call_id, future.attempts - 1)
        try:
            body = serialize.sign(bytes.fromhex(job.secret), pickle.dumps(status, protocol=pickle.HIGHEST_PROTOCOL), key)
            self.storage.put_object(job.bucket, key, body)
        except Exception as exc:  # best effort: the reader's own deadline still ends its wait
            logger.warning("could not record the failure of call %s of %s in storage: %s", call.call_id, job.job_key, exc)

    def retryable(self, kind: str, exc_type: Any) -> bool:
        if kind in RETRYABLE_KINDS:
            return True
        names = set(self.config.retry_on)
        if not names:
            return False
        # as ``except`` does: the type or any of its bases (retry_on=[OSError] retries a
        # ConnectionRefusedError)
        classes = exc_type.__mro__ if isinstance(exc_type, type) else (exc_type,)
        for cls in classes:
            qual = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
            if qual in names or qual.rsplit(".", 1)[-1] in names or qual.replace("builtins.", "") in names:
                return True
        return False

    def failed(self, future: ResponseFuture, kind: str, exc_type: Any, message: str) -> bool:
        """One attempt of a call failed. Returns True when the call goes on (another attempt
        is running, or a retry was launched), False when the failure is final."""
        with self._lock:
            future._inflight = max(0, future._inflight - 1)
            reasons = future.stats.setdefault("attempt_errors", [])
            reasons.append(f"attempt {len(reasons) + 1}: {kind}: {message[:200]}")
            if future._inflight > 0:
                return True  # a speculative copy may still succeed
            retries_used = future.stats.get("retries", 0)
            if retries_used >= self.config.retries or not self.retryable(kind, exc_type):
                return False
            record = self._records.get(future.key)
            if record is None or self._is_closed():
                return False
            future.stats["retries"] = retries_used + 1
        # back off, so a platform or storage outage of a few seconds does not use up every retry
        delay = backoff(retries_used)
        logger.info("retrying call %s of %s after %s in %.1f s (retry %d of %d)", future.call_id, future.job_key,
                    kind, delay, retries_used + 1, self.config.retries)
        timer = threading.Timer(delay, self.launch, (future, record))
        timer.daemon = True
        timer.start()
        return True

    def launch(self, future: ResponseFuture, record: tuple[Job, Call]) -> None:
        with self._lock:
            attempt = future.attempts
            future.attempts += 1
            future._inflight += 1
        self._launch(future, record[0], record[1], attempt)

    def speculate(self, fs: list[ResponseFuture]) -> None:
        """Back up stragglers: calls running far longer than their job's median."""
        cfg = self.config
        if not cfg.speculation:
            return
        now = time.time()
        by_job: dict[str, list[ResponseFuture]] = {}
        for f in fs:
            by_job.setdefault(f.job_key, []).append(f)
        for job_key, futures in by_job.items():
            done = [f for f in futures if f.success]
            pending = [f for f in futures if not f.ready]
            if not pending or len(done) < cfg.speculation_quantile * len(futures):
                continue
            durations = sorted(
                f.stats["worker_end_tstamp"] - f.stats["worker_start_tstamp"]
                for f in done if "worker_end_tstamp" in f.stats and "worker_start_tstamp" in f.stats
            )
            if not durations:
                continue
            median = durations[len(durations) // 2]
            limit = max(cfg.speculation_factor * median, median + 1.0)
            for f in pending:
                started = f.stats.get("host_running_tstamp") or f.stats.get("host_submit_tstamp")
                if started and now - started > limit and not f.stats.get("speculative_copies"):
                    record = self._records.get(f.key)
                    if record is None:
                        continue
                    f.stats["speculative_copies"] = 1
                    logger.info("call %s of %s runs %.1f s (median %.2f s): launching a backup copy",
                                f.call_id, job_key, now - started, median)
                    self.launch(f, record)

    @staticmethod
    def expire_overdue(fs: list[ResponseFuture], fail: Callable[[str, str, BaseException], None]) -> None:
        """The watchdog: a call silent long after its timeout lost its worker; fail it (through
        ``fail(job_key, call_id, error)``, so it may be retried) instead of hanging."""
        now = time.time()
        for f in fs:
            if f.ready:
                continue
            start = f.stats.get("host_running_tstamp") or f.stats.get("host_submit_tstamp")
            limit = f.stats.get("timeout")
            if start and limit:
                grace = max(Attempts.LOST_GRACE, 0.1 * limit)
                if now - start > limit + grace:
                    fail(
                        f.job_key, f.call_id,
                        CallTimeoutError(
                            f"call {f.call_id} of job {f.job_key} sent no result {limit + grace:.0f} s after it "
                            f"was started (timeout {limit:.0f} s): its worker was probably lost"
                        ),
                    )


class Watchdog:
    """The attempts' periodic duties (failing lost calls, speculation) for one executor, run
    every :attr:`INTERVAL` seconds by a daemon thread while any of its calls is unfinished, so
    that whoever waits — ``wait()``/``get_result()``, ``await future``, :func:`wren.as_completed`,
    a done callback, or nobody — a lost call still ends. :meth:`kick` (each submission) starts
    the thread; it ends after :attr:`IDLE` seconds with every call finished, or at :meth:`stop`.
    ``wait()`` ticks through :meth:`tick` too: one tick at a time, at most one per interval."""

    INTERVAL = 0.5
    IDLE = 10.0

    def __init__(self, attempts: Attempts, fail: Callable[[str, str, BaseException], None],
                 futures: list[ResponseFuture]):
        self._attempts = attempts
        self._fail = fail
        self._futures = futures  # the executor's list (it only grows)
        self._ticking = threading.Lock()
        self._state = threading.Lock()
        self._last = 0.0
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def kick(self) -> None:
        """Calls were submitted: make sure the thread runs."""
        with self._state:
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._run, name="wren-watchdog", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def tick(self, fs: list[ResponseFuture]) -> None:
        """Fail ``fs``' lost calls and back up their stragglers (skipped when another thread
        is ticking or ticked less than an interval ago)."""
        if time.monotonic() - self._last < 0.8 * self.INTERVAL or not self._ticking.acquire(blocking=False):
            return
        try:
            self._last = time.monotonic()
            self._attempts.expire_overdue(fs, self._fail)
            self._attempts.speculate(fs)
        finally:
            self._ticking.release()

    def _run(self) -> None:
        idle_since = time.monotonic()
        while not self._stopped.wait(self.INTERVAL):
            busy = {f.job_key for f in self._futures if not f.ready}
            if busy:
                idle_since = time.monotonic()
                try:  # every call of the jobs still running (speculation compares with the finished)
                    self.tick([f for f in self._futures if f.job_key in busy])
                except Exception as exc:  # noqa: BLE001 - e.g. a relaunch failing while closing
                    logger.debug("watchdog: %s", exc)
                continue
            with self._state:
                if time.monotonic() - idle_since > self.IDLE and not any(not f.ready for f in self._futures):
                    self._thread = None  # the next kick starts another
                    return
        with self._state:
            self._thread = None
