"""Wren: run unmodified Python functions at scale, on serverless platforms or this machine.

    import wren
    fexec = wren.function_executor()          # localhost compute + local storage
    futures = fexec.map(lambda x: x * 2, range(1000))
    print(fexec.get_result(futures))
"""
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
