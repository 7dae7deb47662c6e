"""Wren: run unmodified Python functions at scale, on serverless platforms or this machine.

    import wren
    fexec = wren.function_executor()          # localhost compute + local storage
    futures = fexec.map(lambda x: x * 2, range(1000))
    print(fexec.get_result(futures))
"""
from __future__ import annotations

import importlib
import os as _os
from typing import TYPE_CHECKING, Any

# A client imports its whole API here, so that its first executor starts without pausing for
# imports. A worker process (``WREN_WORKER`` set: the localhost pool's) needs only
# wren.worker.* for most calls and gets these names on first use instead (__getattr__ below).
if TYPE_CHECKING or not _os.environ.get("WREN_WORKER"):
    from wren.client.completion import as_completed
    from wren.compute.base import ComputeBackend
    from wren.errors import (
        CallTimeoutError,
        ConfigError,
        InvalidInputError,
        PluginError,
        RemoteError,
        SerializationError,
        StorageError,
        WaitTimeoutError,
        WorkerDiedError,
        WrenError,
    )
    from wren.executor import (
        ALL_COMPLETED,
        ALWAYS,
        ANY_COMPLETED,
        FunctionExecutor,
        LocalhostExecutor,
        ServerlessExecutor,
        code_engine_executor,
        docker_executor,
        function_executor,
        ibm_cf_executor,
        knative_executor,
        local_executor,
        openwhisk_executor,
    )
    from wren.client.futures_list import FuturesList, get_result, wait
    from wren.future import ResponseFuture
    from wren.hookspecs import ComputeBackendSpec, MonitorSpec, StorageBackendSpec, hookimpl
    from wren.monitor import Monitor
    from wren.storage.base import ObjectInfo, StorageBackend
    from wren.storage.client import CloudObject, Storage
    from wren.version import __version__

    # the built-in plugins' modules too: the default (localhost) executor's first start then
    # spends its time starting the worker pool, not importing
    for _module in ("wren.compute.localhost", "wren.storage.local", "wren.monitors.storage",
                    "wren.monitors.rabbitmq"):
        importlib.import_module(_module)
    del _module

_EXPORTS = {
    "as_completed": "wren.client.completion",
    "ComputeBackend": "wren.compute.base",
    "CallTimeoutError": "wren.errors",
    "ConfigError": "wren.errors",
    "InvalidInputError": "wren.errors",
    "PluginError": "wren.errors",
    "RemoteError": "wren.errors",
    "SerializationError": "wren.errors",
    "StorageError": "wren.errors",
    "WaitTimeoutError": "wren.errors",
    "WorkerDiedError": "wren.errors",
    "WrenError": "wren.errors",
    "ALL_COMPLETED": "wren.executor",
    "ALWAYS": "wren.executor",
    "ANY_COMPLETED": "wren.executor",
    "FunctionExecutor": "wren.executor",
    "LocalhostExecutor": "wren.executor",
    "ServerlessExecutor": "wren.executor",
    "code_engine_executor": "wren.executor",
    "docker_executor": "wren.executor",
    "function_executor": "wren.executor",
    "ibm_cf_executor": "wren.executor",
    "knative_executor": "wren.executor",
    "local_executor": "wren.executor",
    "openwhisk_executor": "wren.executor",
    "FuturesList": "wren.client.futures_list",
    "get_result": "wren.client.futures_list",
    "wait": "wren.client.futures_list",
    "ResponseFuture": "wren.future",
    "ComputeBackendSpec": "wren.hookspecs",
    "MonitorSpec": "wren.hookspecs",
    "StorageBackendSpec": "wren.hookspecs",
    "hookimpl": "wren.hookspecs",
    "Monitor": "wren.monitor",
    "ObjectInfo": "wren.storage.base",
    "StorageBackend": "wren.storage.base",
    "CloudObject": "wren.storage.client",
    "Storage": "wren.storage.client",
    "__version__": "wren.version",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wren' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "ALL_COMPLETED",
    "ALWAYS",
    "ANY_COMPLETED",
    "CallTimeoutError",
    "CloudObject",
    "ComputeBackend",
    "ComputeBackendSpec",
    "ConfigError",
    "FunctionExecutor",
    "FuturesList",
    "LocalhostExecutor",
    "ServerlessExecutor",
    "InvalidInputError",
    "Monitor",
    "MonitorSpec",
    "ObjectInfo",
    "PluginError",
    "RemoteError",
    "ResponseFuture",
    "SerializationError",
    "Storage",
    "StorageBackend",
    "StorageBackendSpec",
    "StorageError",
    "WaitTimeoutError",
    "WorkerDiedError",
    "WrenError",
    "__version__",
    "as_completed",
    "code_engine_executor",
    "docker_executor",
    "function_executor",
    "get_result",
    "hookimpl",
    "ibm_cf_executor",
    "knative_executor",
    "local_executor",
    "openwhisk_executor",
    "wait",
]
