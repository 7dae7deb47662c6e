"""The AMQP side of RabbitMQ monitoring shared by client and workers: the ``rabbitmq`` config
section, credential masking, connection parameters, and the workers' event publisher
(:class:`RabbitMQPublisher`). The client's monitor is :mod:`wren.monitors.rabbitmq`.
"""
from __future__ import annotations

import atexit
import dataclasses
import hashlib
import logging
import os
import pickle
import secrets
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from wren import serialize
from wren.config import secret_field
from wren.errors import BackendNotInstalledError, ConfigError
from wren.keys import status_key
from wren.monitor import EventPublisher

if TYPE_CHECKING:
    from wren.records import Job

worker_logger = logging.getLogger("wren.worker.rabbitmq")

NAME = "rabbitmq"


@dataclasses.dataclass
class RabbitMQConfig:
    """``rabbitmq`` section: the broker workers report events through."""

    #: ``amqp://user:password@host:port/vhost`` (or ``amqps://``); a credential, never logged.
    amqp_url: str | None = secret_field(None)
    #: Events the broker sends the client ahead of its acknowledgements.
    prefetch: int = 1000
    #: Seconds to open a connection (TCP, TLS and AMQP handshakes) and longest wait on a blocked one.
    connection_timeout: float = 10.0
    #: AMQP heartbeat in seconds (0 disables it).
    heartbeat: int = 60
    #: With calls pending and no event for this many seconds, list their job prefixes in storage
    #: once (catches workers that died before publishing).
    storage_check_interval: float = 10.0
    #: Workers wait for the broker to confirm each event.
    publisher_confirms: bool = True
    #: The executor's queue disappears after this many seconds without a consumer (the client
    #: deletes it when it closes; this covers a client that vanished).
    queue_expires: float = 3600.0

    def validate(self) -> None:
        if not self.amqp_url:
            raise ConfigError(
                "monitoring='rabbitmq' needs rabbitmq.amqp_url (amqp://user:password@host:5672/vhost): "
                "set it in the config file, the config dict, or the environment variable WREN_RABBITMQ__AMQP_URL"
            )
        scheme = urllib.parse.urlsplit(self.amqp_url).scheme if "://" in self.amqp_url else ""
        if scheme not in ("amqp", "amqps"):
            raise ConfigError(
                f"rabbitmq.amqp_url must start with amqp:// or amqps://, got {mask_url(self.amqp_url)!r}"
            )
        for name in ("prefetch", "connection_timeout", "storage_check_interval", "queue_expires"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"rabbitmq.{name} must be > 0 (got {getattr(self, name)})")
        if self.heartbeat < 0:
            raise ConfigError(f"rabbitmq.heartbeat must be >= 0 seconds (got {self.heartbeat})")


# -- credentials stay out of messages ------------------------------------------------------------

def mask_url(url: str | None) -> str:
    """``url`` with its password replaced by ``****`` (for messages)."""
    if not url:
        return repr(url)
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:****@{host}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<an AMQP URL that does not parse>"


def scrub(text: Any, url: str | None) -> str:
    """``str(text)`` with the URL and its password masked."""
    out = str(text)
    if not url:
        return out
    out = out.replace(url, mask_url(url))
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    if password:
        for p in {password, urllib.parse.unquote(password)}:
            if len(p) >= 3:
                out = out.replace(p, "****")
    return out


def _describe(exc: BaseException, url: str | None) -> str:
    text = scrub(exc, url)
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name


def _pika() -> Any:
    try:
        import pika
    except ImportError:
        raise BackendNotInstalledError(
            "monitoring='rabbitmq' needs pika: pip install 'wren-core[rabbitmq]'"
        ) from None
    return pika


def _parameters(url: str, timeout: float, heartbeat: int, role: str) -> Any:
    pika = _pika()
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = timeout
    params.connection_attempts = 1
    params.retry_delay = 0
    params.client_properties = {"connection_name": f"wren {role} pid {os.getpid()}"}
    return params


def queue_name(executor_id: str) -> str:
    name = f"wren.events.{executor_id}.{secrets.token_hex(4)}"
    if len(name) > 200:  # AMQP's limit is 255 bytes; nested executor ids grow
        name = "wren.events." + hashlib.sha256(name.encode()).hexdigest()
    return name


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if value is None else str(value)


def _close_quietly(conn: Any) -> None:
    if conn is None:
        return
    try:
        if conn.is_open:
            conn.close()
    except Exception:
        pass


class RabbitMQPublisher(EventPublisher):
    """One connection per worker process, opened on the first event and reused; reopened
    lazily (once at once when a reused connection turns out stale, then with a back-off)."""

    BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)

    def __init__(self, events: dict[str, Any]):
        self.url: str = events["amqp_url"]
        self.queue: str = events["queue"]
        self.heartbeat = int(events.get("heartbeat", 60))
        self.timeout = float(events.get("connection_timeout", 10.0))
        self.confirms = bool(events.get("confirms", True))
        self._lock = threading.Lock()
        self._conn: Any = None
        self._ch: Any = None
        self._pid = os.getpid()
        self._failures = 0
        self._retry_at = 0.0
        self.published = 0
        atexit.register(self.close)
        try:  # multiprocessing children end with os._exit: close there too (flushes, no RST)
            import multiprocessing.util

            multiprocessing.util.Finalize(self, self.close, exitpriority=10)
        except Exception:
            pass

    def publish(self, job: Job, event: str, status: dict[str, Any] | None) -> None:
        pika = _pika()
        call_id = (status or {}).get("call_id")
        attempt = int((status or {}).get("attempt") or 0)
        body = b""
        if event == "finish" and status is not None:
            place = status_key(job.prefix, str(call_id), attempt)
            body = serialize.sign(bytes.fromhex(job.secret), pickle.dumps(status, protocol=pickle.HIGHEST_PROTOCOL), place)
        props = pika.BasicProperties(
            type=event, delivery_mode=1, content_type="application/x-wren-status",
            headers={"job_key": job.job_key, "call_id": call_id, "attempt": str(attempt)},
        )
        with self._lock:
            if os.getpid() != self._pid:  # forked: the parent's connection is not ours to use
                self._conn = self._ch = None
                self._pid = os.getpid()
                self._failures, self._retry_at = 0, 0.0
            for attempt in (1, 2):
                fresh = False
                if self._ch is None:
                    if time.monotonic() < self._retry_at:
                        worker_logger.debug("skipping the %s event of call %s: broker unreachable", event, call_id)
                        return
                    try:
                        self._connect()
                        fresh = True
                    except Exception as exc:
                        self._failed(exc, event, call_id)
                        return
                try:
                    if not fresh:
                        self._conn.process_data_events(0)  # answer heartbeats, notice a closed socket
                    self._ch.basic_publish("", self.queue, body, props)
                    self._failures = 0
                    self.published += 1
                    return
                except Exception as exc:
                    self._drop()
                    if fresh or attempt == 2:
                        self._failed(exc, event, call_id)
                        return
                    # a reused connection went stale while idle: reopen it once at once

    def _connect(self) -> None:
        pika = _pika()
        conn = pika.BlockingConnection(_parameters(self.url, self.timeout, self.heartbeat, "worker"))
        try:
            ch = conn.channel()
            if self.confirms:
                ch.confirm_delivery()
        except BaseException:
            _close_quietly(conn)
            raise
        self._conn, self._ch = conn, ch

    def _drop(self) -> None:
        conn, self._conn, self._ch = self._conn, None, None
        _close_quietly(conn)

    def _failed(self, exc: BaseException, event: str, call_id: Any) -> None:
        self._failures += 1
        wait = self.BACKOFF[min(self._failures, len(self.BACKOFF)) - 1]
        self._retry_at = time.monotonic() + wait
        worker_logger.warning(
            "could not publish the %s event of call %s to RabbitMQ at %s (%s); the status is in storage; "
            "next attempt in %g s", event, call_id, mask_url(self.url), _describe(exc, self.url), wait,
        )

    def close(self) -> None:
        """Close this process's connection (at exit)."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            self._drop()
