"""The compute contract: what a compute backend plugin implements.

A compute backend delivers calls to the one worker runtime that ships with wren-core
(:func:`wren.worker.runtime.WorkerRuntime.run`, reached in containers through
``python -m wren.worker``). It never re-implements job handling: fetching the function and
data, running it, and writing the status and result all happen in that runtime.

Writing a compute backend
-------------------------
1. Subclass :class:`ComputeBackend`; set ``name`` and ``config_class`` (a dataclass whose fields
   are the keys of the config section named after the backend).
2. Implement :meth:`invoke`: start each call (an HTTP POST, a container exec...) so that the
   worker runtime receives ``{"job": job, "calls": [call, ...]}`` (typed records from
   :mod:`wren.records`; :func:`wren.worker.protocol.dumps` gives their JSON wire form).
   Return as soon as the calls are on their way; raise :class:`wren.errors.InvocationError` (or report through
   ``channel.failed``) for a call that cannot be delivered, with a message that says why.
3. Results come back through storage: the runtime writes a status record per call under the
   job's prefix, and the executor's monitor finds it by listing. A backend with a faster way
   back passes status records to ``channel.deliver``: the localhost pool's pipes, or a
   synchronous HTTP backend that adds ``"return_status": true`` to the payload and finds the
   records in the entry point's answer (``protocol.decode(answer["statuses"])``).
4. Do no network I/O in ``__init__``; connect in :meth:`start` or lazily.
   A platform whose functions may call its own API can offer a remote invoker: send one
   payload with ``"remote_invoker": {"backend": name, ...}`` and the calls, and implement
   :meth:`invoke_from_platform`, which the entry point runs inside that activation.
5. Offer the spec from a ``wren_compute_backends`` hook and run
   ``wren.testing.ComputeBackendConformance`` against the backend.
"""
from __future__ import annotations

import abc
import sys
from typing import Any, ClassVar, Protocol
from collections.abc import Sequence

from wren.config import WrenConfig
from wren.records import Call, Job


class ResultChannel(Protocol):
    """How a backend reports on calls to the executor (thread-safe)."""

    def deliver(self, status: dict[str, Any]) -> None:
        """A call finished: ``status`` is the record the worker runtime produced. From
        :class:`wren.worker.pool.WorkerPool`, for a job whose statuses are not stored, a large
        result arrives unpickled already, as ``status["result_value"]`` (or the error that
        unpickling it raised as ``status["result_error"]``) instead of ``status["result"]``."""

    def running(self, job_key: str, call_id: str) -> None:
        """A call started running (optional; feeds progress bars)."""

    def failed(self, job_key: str, call_id: str, error: BaseException) -> None:
        """A call cannot finish: it was not delivered, or its worker died or timed out."""


class ComputeBackend(abc.ABC):
    """A place where calls run. See the module docstring for the guide to writing one."""

    #: The backend's name, as users write it in ``backend=`` and as its config section.
    name: ClassVar[str]
    #: Dataclass of the config section; ``None`` when the backend has no settings.
    config_class: ClassVar[type | None] = None
    #: True when the backend queues calls itself and enforces ``max_workers`` per executor;
    #: otherwise wren's invoker hands it at most ``max_workers`` calls at a time.
    manages_concurrency: ClassVar[bool] = False
    #: True when workers run on the client's machine, so local-only storage is usable.
    runs_locally: ClassVar[bool] = False
    #: True when calls die with the process that invoked them; an executor created inside a
    #: call then waits for its calls before that call returns.
    bound_to_client_process: ClassVar[bool] = False
    #: Price per GB-second of worker memory, for cost estimates (``None``: not billed).
    price_per_gb_second: ClassVar[float | None] = None

    def __init__(self, config: Any, wren_config: WrenConfig):
        self.config = config
        self.wren_config = wren_config
        #: The executor's storage (set by the executor, and by the CLI's runtime commands):
        #: runtime metadata is cached there too. ``None`` when there is none.
        self.storage: Any = None

    @property
    def default_max_workers(self) -> int:
        """Calls of one executor running at once when ``max_workers`` is not set."""
        return 1000

    @property
    def max_payload_bytes(self) -> int:
        """Largest invocation payload the platform accepts (call data beyond it goes via storage)."""
        return 1024 * 1024

    def start(self) -> None:
        """Get ready to invoke (connect, warm a pool). Called once, before the first invoke."""

    @abc.abstractmethod
    def invoke(self, job: Job, calls: Sequence[Call], channel: ResultChannel) -> None:
        """Start ``calls`` of ``job`` (the records are described in :mod:`wren.records`;
        send them with :func:`wren.worker.protocol.dumps`)."""

    def invoke_from_platform(
        self, job: Job, calls: Sequence[Call], channel: ResultChannel, spec: dict[str, Any]
    ) -> None:
        """Start ``calls`` from inside the platform (a remote-invoker activation, see
        :mod:`wren.worker.fanout`): like :meth:`invoke`, but never through another remote
        invoker. ``spec`` is what the client's backend put in the payload, plus ``deadline``
        (epoch seconds) when the platform said when it stops the activation: give up on what
        is still retrying before then, and report those calls through ``channel.failed``."""
        raise NotImplementedError(f"backend {self.name!r} has no remote invoker")

    def cancel(self, job_key: str) -> None:
        """Drop calls of ``job_key`` that have not started (best effort)."""

    def close(self) -> None:
        """Release what :meth:`start` acquired. Called when the executor closes."""

    def check_storage(self, storage: Any) -> None:
        """Refuse storage the workers cannot reach, with an error that says what to use."""
        from wren.errors import ConfigError

        if getattr(storage, "local_only", False) and not self.runs_locally:
            raise ConfigError(
                f"backend {self.name!r} runs calls on other machines, which cannot read "
                f"storage {storage.name!r} on this one; configure shared storage, e.g. "
                "storage='ibm_cos' (pip install wren-storage-cos)"
            )

    # -- runtimes (container backends override these) --------------------------------------
    def metadata_cache(self) -> Any:
        """Where runtime metadata is cached: ``~/.wren/runtimes`` and :attr:`storage`."""
        from wren.runtimes.metadata import MetadataCache

        return MetadataCache(storage=self.storage)

    def runtime_metadata(self, runtime: str | None = None) -> dict[str, Any]:
        """What the runtime has: ``python`` ("3.11"), ``wren`` version, ``modules`` (top-level
        names importable there, or ``None`` when unknown)."""
        from wren.version import __version__

        return {
            "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
            "wren": __version__,
            "modules": None,
        }

    def build_runtime(self, name: str, dockerfile: str | None = None, **options: Any) -> None:
        raise NotImplementedError(f"backend {self.name!r} has no runtimes to build")

    def deploy_runtime(self, name: str, memory: int | None = None, **options: Any) -> dict[str, Any]:
        raise NotImplementedError(f"backend {self.name!r} has no runtimes to deploy")

    def list_runtimes(self) -> list[dict[str, Any]]:
        return []

    def clean_resources(self, all: bool = False) -> list[str]:  # noqa: A002 - the CLI's word
        """Remove what the backend left running or deployed for wren (``wren clean``): e.g.
        worker containers of clients that are gone; with ``all``, every wren resource.
        Returns a line per thing removed."""
        return []

    def delete_runtime(self, name: str, memory: int | None = None) -> None:
        raise NotImplementedError(f"backend {self.name!r} has no runtimes to delete")
