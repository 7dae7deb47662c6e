"""Exceptions raised by wren.

Every error a user can trigger derives from :class:`WrenError`; each message says what went
wrong and what to do about it.
"""
from __future__ import annotations


class WrenError(Exception):
    """Base class of every wren error."""


class ConfigError(WrenError, ValueError):
    """The configuration is invalid (unknown key, wrong type, missing value)."""


class PluginError(WrenError):
    """A plugin is unknown, missing, broken, or two plugins claim one name."""


class BackendNotInstalledError(PluginError, ImportError):
    """A backend is known but its distribution is not installed."""


class InvalidInputError(WrenError, ValueError):
    """Bad arguments to an executor method, found before anything was sent."""


class InvalidArgumentBindingError(InvalidInputError, TypeError):
    """A call's arguments do not match the function's signature."""


class SerializationError(WrenError):
    """A function, argument or result could not be pickled or unpickled."""


class DataLimitError(InvalidInputError):
    """A call's data is over the configured limit."""


class StorageError(WrenError):
    """An object storage operation failed."""


class StorageInvalidObjectError(StorageError):
    """What is stored under the key is not an object that can be read (another try will not
    change that)."""


class StorageNoSuchKeyError(StorageError, KeyError):
    """The object does not exist."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "no such key"


class StorageNoSuchBucketError(StorageError):
    """The bucket does not exist."""


class StorageAuthError(StorageError, PermissionError):
    """The storage service refused the credentials."""


class ComputeError(WrenError):
    """The compute backend could not run a call."""


class InvocationError(ComputeError):
    """A call could not be delivered to the compute backend."""


class WorkerDiedError(ComputeError):
    """The worker running a call died before reporting a result (killed, out of memory, exit)."""


class CallTimeoutError(ComputeError, TimeoutError):
    """A call ran longer than its timeout."""


class ExecutorClosedError(WrenError):
    """The executor was closed while the call was pending: its result will not be read."""


class WaitTimeoutError(WrenError, TimeoutError):
    """``get_result``/``wait`` gave up waiting before the calls finished."""


class VersionMismatchError(WrenError):
    """The runtime's Python or wren version does not match the client's."""


class RemoteError(WrenError):
    """A remote exception that could not be sent back as itself (e.g. unpicklable).

    ``exc_type`` names the original exception type and ``remote_traceback`` holds the
    worker-side traceback text.

    :param message: the error message (the original exception's text).
    :param exc_type: the original exception type's name (default: empty).
    :param remote_traceback: the worker-side traceback text (default: empty).
    """

    def __init__(self, message: str, exc_type: str = "", remote_traceback: str = ""):
        super().__init__(message)
        self.exc_type = exc_type
        self.remote_traceback = remote_traceback


class RemoteTraceback(Exception):
    """Carries the worker-side traceback; attached as ``__cause__`` of re-raised exceptions."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def error_kind(exc: BaseException) -> str:
    """How a call that failed with ``exc`` outside the user's code failed: ``timeout``,
    ``worker_died`` or ``system`` (the kinds retries treat as worth another try)."""
    if isinstance(exc, CallTimeoutError):
        return "timeout"
    if isinstance(exc, WorkerDiedError):
        return "worker_died"
    return "system"
