"""RabbitMQ push monitoring: ``monitoring='rabbitmq'`` (``pip install 'wren-core[rabbitmq]'``).

Workers publish a ``start`` event before each call and a ``finish`` event after it to a queue of
the executor; the ``finish`` event carries the call's status record signed with the job's key
(the same envelope the worker writes to storage), so results that fit inline reach the client
with no storage request at all. Storage stays the durable record:

- the client declares the queue (named after the executor, auto-deleted, removed when the
  executor closes) and consumes it over one connection, in one background thread that makes
  every pika call (``BlockingConnection`` is not thread-safe);
- a broker that cannot be reached when the first job is sent is reported with a warning and
  the executor polls storage instead (a wrapped :class:`~wren.monitor.StorageMonitor`);
- a connection lost in the middle of a job hands every pending call to storage polling, so no
  result is lost;
- when no event arrives for ``storage_check_interval`` seconds while calls are pending, the
  client lists their job prefixes once (a worker killed before it could publish still leaves
  its status in storage);
- on the worker, one connection per process is reused across calls and reopened lazily;
  publishing failures are logged and never fail a call.

Config section ``rabbitmq`` (:class:`RabbitMQConfig`)::

    wren: {monitoring: rabbitmq}
    rabbitmq: {amqp_url: "amqp://user:password@host:5672/vhost"}

The URL holds credentials: it is masked (``amqp://user:****@host:5672/vhost``) in every message.
"""
from __future__ import annotations

import concurrent.futures
import logging
import pickle
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from wren import serialize
from wren.keys import status_key
from wren.monitor import EventPublisher, Monitor
from wren.monitors.amqp import (  # noqa: F401 - the names this module always offered
    NAME,
    RabbitMQConfig,
    RabbitMQPublisher,
    _close_quietly,
    _describe,
    _parameters,
    _pika,
    _text,
    mask_url,
    queue_name,
    scrub,
)
from wren.monitors.storage import StorageMonitor, check_record

if TYPE_CHECKING:
    from wren.future import ResponseFuture
    from wren.records import Job

logger = logging.getLogger("wren.monitor.rabbitmq")

_NEW, _CONNECTING, _UP, _DOWN, _STOPPED = "new", "connecting", "up", "down", "stopped"


class RabbitMQMonitor(Monitor):
    """Consumes the executor's event queue; falls back to storage polling when it cannot."""

    def __init__(
        self,
        storage: Any,
        on_status: Callable[[ResponseFuture, dict[str, Any]], None],
        on_error: Callable[[ResponseFuture, BaseException], None],
        interval: float,
        config: RabbitMQConfig | None = None,
    ):
        if config is None:
            config = RabbitMQConfig()
            config.validate()
        super().__init__(storage, on_status, on_error, interval, config)
        self.config: RabbitMQConfig = config
        _pika()  # a missing extra is reported before anything is sent
        self._fallback = StorageMonitor(storage, on_status, on_error, interval)
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], ResponseFuture] = {}
        self._event_jobs: set[str] = set()
        self._state = _NEW
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._queue: str | None = None
        self._last_event = time.monotonic()
        self._sweeping = False
        self._seen: set[str] = set()  # status keys fetched by the safety checks
        #: events consumed, and storage listings made by the safety checks (for tests and stats)
        self.events_received = 0
        self.sweep_list_requests = 0

    # -- what the executor sees -----------------------------------------------------------------
    @property
    def list_requests(self) -> int:
        """Storage listings made by this monitor (safety checks plus storage polling)."""
        return self.sweep_list_requests + self._fallback.list_requests

    @property
    def state(self) -> str:
        """``new``, ``connecting``, ``up`` (events flow), ``down`` (storage polling) or ``stopped``."""
        return self._state

    @property
    def queue(self) -> str | None:
        return self._queue

    def job_events(self, job: Job) -> dict[str, Any] | None:
        with self._lock:
            if self._state == _NEW:
                self._queue = queue_name(job.executor_id)
                self._state = _CONNECTING
                self._thread = threading.Thread(target=self._run, name="wren-rabbitmq", daemon=True)
                self._thread.start()
        # the first job waits for the queue (bounded: connection_attempts=1 and socket timeouts)
        if not self._ready.wait(self.config.connection_timeout * 3 + 5):
            self._give_up("the broker did not answer in time")
        with self._lock:
            if self._state != _UP:
                return None
            self._event_jobs.add(job.job_key)
        c = self.config
        return {
            "monitor": NAME,
            "amqp_url": c.amqp_url,
            "queue": self._queue,
            "heartbeat": c.heartbeat,
            "connection_timeout": c.connection_timeout,
            "confirms": c.publisher_confirms,
        }

    def watch(self, futures: Iterable[ResponseFuture]) -> None:
        to_storage = []
        added = False
        with self._lock:
            for f in futures:
                if f.ready:
                    continue
                if self._state == _UP and f.job_key in self._event_jobs:
                    self._pending[f.key] = f
                    added = True
                else:  # futures of other executors (nested calls), or no broker
                    to_storage.append(f)
        if to_storage:
            self._fallback.watch(to_storage)
        if added:
            self._wake()

    def poke(self) -> None:
        self._fallback.poke()
        self._wake()

    def stop(self) -> None:
        with self._lock:
            if self._state == _STOPPED:
                return
            self._state = _STOPPED
            self._pending.clear()
        self._ready.set()
        self._wake()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(self.config.connection_timeout + 5)  # it deletes the queue and closes
        self._fallback.stop()

    # -- the consumer thread (every pika call happens here) -------------------------------------
    def _wake(self) -> None:
        conn = self._conn
        if conn is not None:
            try:
                conn.add_callback_threadsafe(lambda: None)
            except Exception:  # closed meanwhile: the thread is ending anyway
                pass

    def _give_up(self, why: str) -> None:
        with self._lock:
            if self._state not in (_NEW, _CONNECTING):
                return
            self._state = _DOWN
        logger.warning(
            "RabbitMQ broker at %s is unreachable (%s); falling back to storage polling",
            mask_url(self.config.amqp_url), why,
        )
        self._ready.set()

    def _run(self) -> None:
        c = self.config
        url = c.amqp_url or ""
        conn = None
        try:
            conn = _pika().BlockingConnection(_parameters(url, c.connection_timeout, c.heartbeat, "client"))
            ch = conn.channel()
            ch.queue_declare(
                queue=self._queue, durable=False, auto_delete=True,
                arguments={"x-expires": int(c.queue_expires * 1000)},
            )
            ch.basic_qos(prefetch_count=c.prefetch)
            ch.basic_consume(self._queue, self._on_message)
        except Exception as exc:
            self._give_up(_describe(exc, url))
            _close_quietly(conn)
            return
        with self._lock:
            late = self._state != _CONNECTING  # stopped, or given up on meanwhile
            if not late:
                self._conn = conn
                self._state = _UP
        if late:
            self._close(conn, ch)
            return
        self._ready.set()
        logger.info("monitoring through RabbitMQ at %s, queue %s", mask_url(url), self._queue)
        try:
            while self._state == _UP:
                conn.process_data_events(time_limit=self._time_limit())
                self._maybe_check_storage()
        except Exception as exc:
            if self._state == _UP:
                self._lost(exc)
                _close_quietly(conn)
                return
        self._close(conn, ch)

    def _close(self, conn: Any, ch: Any) -> None:
        self._conn = None
        try:
            ch.queue_delete(self._queue)
        except Exception as exc:
            logger.debug("could not delete queue %s: %s", self._queue, _describe(exc, self.config.amqp_url))
        _close_quietly(conn)

    def _time_limit(self) -> float | None:
        with self._lock:
            if not self._pending:
                return None  # wait for events; watch() and stop() wake the thread
        return max(0.0, self.config.storage_check_interval - (time.monotonic() - self._last_event))

    def _on_message(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        self._last_event = time.monotonic()
        self.events_received += 1
        try:
            self._handle(props, body)
        except Exception as exc:  # a bad event must not stop the consumer
            logger.warning("ignoring a RabbitMQ event: %s", _describe(exc, self.config.amqp_url))
        ch.basic_ack(method.delivery_tag)

    def _handle(self, props: Any, body: bytes) -> None:
        headers = props.headers or {}
        key = (_text(headers.get("job_key")) or "", _text(headers.get("call_id")) or "")
        with self._lock:
            f = self._pending.get(key)
        if f is None:  # finished already (found in storage), or not ours
            return
        if props.type == "start":
            ex = getattr(f, "_executor", None)
            if ex is not None and hasattr(ex, "running"):
                ex.running(*key)
            else:
                from wren.future import RUNNING

                f._mark(RUNNING)
        elif props.type == "finish":
            try:
                attempt = int(_text(headers.get("attempt")) or 0)
                place = status_key(f.job_prefix, f.call_id, attempt)
                record = pickle.loads(serialize.verify(f._secret_bytes(), body, "a status event", place))
            except Exception as exc:  # not from our workers: storage still has the real one
                logger.warning("ignoring the finish event of call %s of job %s: %s", key[1], key[0], exc)
                return
            if (record.get("job_key"), record.get("call_id")) != key:
                logger.warning("ignoring a finish event whose record names another call (%s)", key)
                return
            self._deliver(f, record)

    def _deliver(self, f: ResponseFuture, record: dict[str, Any]) -> None:
        with self._lock:
            if self._state == _STOPPED or f.key not in self._pending:
                return
        self.on_status(f, record)
        # a failed attempt may be retried, or a speculative copy still run: keep listening
        # until the future is ready (the executor may also watch it again)
        if f.ready:
            with self._lock:
                self._pending.pop(f.key, None)

    def _lost(self, exc: BaseException) -> None:
        with self._lock:
            self._state = _DOWN
            self._conn = None
            futures = list(self._pending.values())
            self._pending.clear()
        logger.warning(
            "lost the RabbitMQ connection to %s (%s); continuing with storage polling for %d pending call(s)",
            mask_url(self.config.amqp_url), _describe(exc, self.config.amqp_url), len(futures),
        )
        self._fallback.watch(futures)

    # -- safety check: calls whose worker died before publishing --------------------------------
    def _maybe_check_storage(self) -> None:
        with self._lock:
            due = (
                self._pending and not self._sweeping
                and time.monotonic() - self._last_event >= self.config.storage_check_interval
            )
            if not due:
                return
            self._sweeping = True
        self._last_event = time.monotonic()
        threading.Thread(target=self._check_storage, name="wren-rabbitmq-check", daemon=True).start()

    def _check_storage(self) -> None:
        try:
            with self._lock:
                futures = [f for f in self._pending.values() if not f.ready]
            groups: dict[tuple[str, str], dict[str, ResponseFuture]] = {}
            for f in futures:
                groups.setdefault((f.bucket, f.job_prefix), {})[f.call_id] = f
            found = []
            for (bucket, prefix), calls in groups.items():
                self.sweep_list_requests += 1
                try:
                    keys = self.storage.list_keys(bucket, prefix + "/")
                except Exception as exc:
                    logger.warning("listing %s failed (%s)", prefix, exc)
                    continue
                for k in keys:
                    cid = _status_call_id(prefix, k)
                    match = calls.get(cid) if cid is not None and k not in self._seen else None
                    if match is not None:
                        self._seen.add(k)
                        found.append((match, k))
            if found:
                logger.debug("no RabbitMQ event for a while; found %d status record(s) in storage", len(found))
                with concurrent.futures.ThreadPoolExecutor(min(16, len(found))) as pool:
                    list(pool.map(lambda fk: self._fetch(*fk), found))
        finally:
            with self._lock:
                self._sweeping = False

    def _fetch(self, f: ResponseFuture, key: str) -> None:
        try:
            blob = serialize.read_signed(self.storage, f.bucket, key, "a status record")
            record = pickle.loads(serialize.verify(f._secret_bytes(), blob, "a status record", key))
            check_record(f, record)
        except Exception as exc:
            with self._lock:
                mine = self._state != _STOPPED and f.key in self._pending
            if mine:
                self.on_error(f, exc)
                if f.ready:
                    with self._lock:
                        self._pending.pop(f.key, None)
            return
        self._deliver(f, record)

    # -- the worker side ------------------------------------------------------------------------
    @classmethod
    def worker_publisher(cls, events: dict[str, Any]) -> EventPublisher | None:
        return RabbitMQPublisher(events)


def _status_call_id(prefix: str, key: str) -> str | None:
    """The call id of a status key under ``prefix`` (``<call>.status`` or ``<call>.r<attempt>.status``)."""
    if not key.endswith(".status") or not key.startswith(prefix + "/"):
        return None
    name = key[len(prefix) + 1: -len(".status")]
    call_id = name.split(".r", 1)[0]
    return call_id if call_id and "/" not in call_id else None


