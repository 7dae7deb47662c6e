"""The built-in plugins: localhost compute, local-filesystem storage, storage monitoring.

They are registered through the same hooks as any third-party plugin.
"""
from __future__ import annotations

from wren.hookspecs import ComputeBackendSpec, MonitorSpec, StorageBackendSpec, hookimpl
from wren.localconfig import LocalhostConfig


@hookimpl
def wren_compute_backends() -> list[ComputeBackendSpec]:
    from wren.compute.localhost import LocalhostBackend

    return [ComputeBackendSpec("localhost", LocalhostBackend, LocalhostConfig, "worker processes on this machine")]


@hookimpl
def wren_storage_backends() -> list[StorageBackendSpec]:
    from wren.storage.local import LocalStorage

    return [StorageBackendSpec("localhost", LocalStorage, LocalhostConfig, "files under localhost.storage_root")]


@hookimpl
def wren_monitors() -> list[MonitorSpec]:
    from wren.monitors.storage import StorageMonitor
    from wren.monitors.amqp import RabbitMQConfig
    from wren.monitors.rabbitmq import RabbitMQMonitor  # imports pika only when used

    return [MonitorSpec("storage", StorageMonitor, None, "list job prefixes in storage"),
            MonitorSpec("rabbitmq", RabbitMQMonitor, RabbitMQConfig, "events through a RabbitMQ queue (wren-core[rabbitmq])")]
