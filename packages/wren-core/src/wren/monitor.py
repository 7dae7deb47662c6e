"""The monitor contract: how the client learns that calls finished.

A :class:`Monitor` watches futures and hands each status record to the executor; a push
monitor also gives workers an :class:`EventPublisher`. Monitors are plugins
(``wren_monitors`` hook); the built-ins are :class:`wren.monitors.storage.StorageMonitor` (the
default: lists job prefixes in storage) and :class:`wren.monitors.rabbitmq.RabbitMQMonitor`.
"""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Iterable

if TYPE_CHECKING:
    from wren.future import ResponseFuture
    from wren.records import Job


class Monitor(abc.ABC):
    """Learns of finished calls. Implementations call ``on_status(future, record)``.

    :param storage: the executor's :class:`~wren.storage.base.StorageBackend`.
    :param on_status: called with a future and its status record (a dict) when the call finished.
    :param on_error: called with a future and the exception when learning its outcome failed.
    :param interval: seconds between polls (``wren.monitor_interval``), for monitors that poll.
    :param config: the parsed config section of the monitor (``None`` when it has none).
    """

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

    def job_events(self, job: Job) -> dict[str, Any] | None:
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
    def publish(self, job: Job, event: str, status: dict[str, Any] | None) -> None:
        """``event`` is ``"start"`` (status ``None``) or ``"finish"`` (the signed status
        record's fields)."""

    def close(self) -> None:
        """Release the connection (at process exit)."""
