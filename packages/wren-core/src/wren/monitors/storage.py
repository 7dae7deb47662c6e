"""The default monitor: lists each job's prefix in storage to find status records.

One LIST request covers many calls; new status records are fetched in parallel; between
listings it backs off when nothing changes (from 20 ms up to ``monitor_interval``) and wakes at
once when new futures are added. A record whose call settled meanwhile through the backend's
own channel (answers carrying the records, like Knative's) is not fetched and does not count
as progress: listings then stay at their slow pace, a fallback. A backend with its own channel (the localhost pool's pipes)
delivers records directly and this monitor only covers futures that channel does not.
"""
from __future__ import annotations

import concurrent.futures
import logging
import pickle
import threading
from typing import TYPE_CHECKING, Any
from collections.abc import Iterable

from wren import serialize
from wren.errors import SerializationError
from wren.keys import parse_status_key
from wren.monitor import Monitor

if TYPE_CHECKING:
    from wren.future import ResponseFuture

logger = logging.getLogger("wren.monitor")


def check_record(future: ResponseFuture, record: Any) -> None:
    """Refuse a verified status record that names another call than the one expected."""
    if not isinstance(record, dict) or (record.get("job_key"), record.get("call_id")) != future.key:
        named = (record.get("job_key"), record.get("call_id")) if isinstance(record, dict) else type(record).__name__
        raise SerializationError(
            f"refusing the status record of call {future.call_id} of job {future.job_key}: it names {named}"
        )


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

    def _fetch(self, future: ResponseFuture, key: str) -> bool:
        """Read a status record and settle its future; False when the future was settled
        meanwhile (a backend whose answers carry the records too got there first)."""
        if future.ready:
            return False
        try:
            blob = serialize.read_signed(self.storage, future.bucket, key, "a status record")
            record = pickle.loads(serialize.verify(future._secret_bytes(), blob, "a status record", key))
            check_record(future, record)
        except Exception as exc:  # a bad record must not stall the rest
            self.on_error(future, exc)
            return True
        self.on_status(future, record)
        return True

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
                    with self._cond:
                        for f, _ in found:
                            self._pending.get(prefix, {}).pop(f.call_id, None)
                    if self._pool is None:
                        self._pool = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="wren-fetch")
                    # progress is what only storage told: records that the backend's answers
                    # delivered meanwhile do not make the listings more frequent
                    progressed = any(list(self._pool.map(lambda fk: self._fetch(*fk), found))) or progressed
            delay = self.MIN_INTERVAL if progressed else min(delay * 1.5, self.interval)
            with self._cond:
                if not self._stopped:
                    self._cond.wait(timeout=delay)
