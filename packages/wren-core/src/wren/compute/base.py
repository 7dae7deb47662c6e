"""The compute contract: what a compute backend plugin implements.

A compute backend only *delivers* calls. Every call, on every backend, runs in the one worker
runtime that ships with wren-core; a backend never re-implements job handling (fetching and
verifying the function and data, running it, writing the status and result). The full guide,
with a worked example, is ``docs/plugins.md`` in the repository; this docstring and
``help(ComputeBackend)`` / ``help(ResultChannel)`` hold the contract itself.

How a call runs (pick one)
--------------------------
* **In a container or on another machine**: start ``python -m wren.worker [--port 8080]`` (the
  image's entry point) and POST ``wren.worker.protocol.dumps({"job": job, "calls": [...]})`` to
  it (``/run`` with the payload under ``"value"``, OpenWhisk style, or ``/``). It runs the calls
  on a supervised warm pool, writes every call's status record to storage, and answers
  ``{"job_key", "calls": [{"call_id", "ok"}...]}``; with ``"return_status": true`` in the payload
  it answers ``{"job_key", "statuses": ...}`` (``protocol.decode`` gives the records to pass to
  ``channel.deliver``).
* **In your own worker process** (any Python with wren-core installed):
  ``wren.worker.supervisor.run_calls(job, calls, return_status=False) -> list[dict]`` runs the
  calls on the warm pool of that process, enforces timeouts, writes a status record for every
  call even if its worker died, and returns one summary per call (``{"call_id", "ok"}``), or
  with ``return_status=True`` the full status records.
* **In local processes of the client's machine**: :class:`wren.worker.pool.WorkerPool` (see its
  docstring) is the supervised warm pool the localhost backend uses; a backend built on it is a
  few tens of lines (``examples/wren-backend-subprocess``).
* The primitive underneath all three, for a worker you supervise yourself:
  ``wren.worker.runtime.get_runtime().run(job, call, write_status=None) -> dict``. ``job`` and
  ``call`` are :class:`wren.records.Job`/:class:`~wren.records.Call` or their wire dicts; it
  returns the call's status record (``job_key``, ``call_id``, ``attempt``, ``success``,
  ``result`` or ``result_key`` or the exception fields, ``logs``, ``stats``) and never raises
  for the user's errors. ``write_status=None`` means "as the job says" (``job.store_results``).
  It is thread-safe, but it does **not** enforce the timeout and cannot survive the call
  killing its process: whoever calls it must do both (``run_calls`` and ``WorkerPool`` do).

Never run calls in the client's own process or threads: a call's ``extra_env`` is applied to
``os.environ`` (process-wide) while it runs, a call may call ``os._exit`` or be killed for its
memory, and its imports and ``sys.path`` changes stay. The conformance suite checks that a call
cannot change the client's environment.

Who does what when a call goes wrong
------------------------------------
* **Timeout** (``job.timeout`` seconds per call): enforced where the call runs. ``WorkerPool``
  and ``python -m wren.worker`` kill the worker and report :class:`wren.errors.CallTimeoutError`
  (through ``channel.failed``, or as a status record in storage). A backend that runs calls
  some other way must do the same. Last resort only: the client's watchdog fails a call that
  sent nothing ``timeout + max(30 s, 10 %)`` after it started, also with ``CallTimeoutError``.
* **Dead worker** (killed, out of memory, ``os._exit``): the supervisor that notices reports
  :class:`wren.errors.WorkerDiedError` for that call only (``channel.failed``, or a status
  record written by ``run_calls``/``python -m wren.worker``); the other calls go on.
* **Not deliverable** (platform refuses, quota, network): raise
  :class:`wren.errors.InvocationError` from :meth:`~ComputeBackend.invoke` (every call of that
  batch fails with it) or call ``channel.failed`` per call. Retries (``retries=N``) are the
  executor's business: never retry a call's *execution* yourself; retrying a transport error
  before the call started is fine.

Results: storage, the channel, or both
--------------------------------------
By default (``delivers_results = False``) each job has ``store_results=True``: the runtime
writes a signed status record per call to storage (``WorkerRuntime.write_status``) and the
executor's monitor finds it by listing the job's prefix. A backend may *also* pass the same
records to ``channel.deliver`` as they arrive (faster); duplicates are harmless, the first
record of a call wins. A backend that sets ``delivers_results = True`` promises to report every
call itself (``deliver`` or ``failed``); the executor then does not poll storage and sends jobs
with ``store_results=False`` (unless the user picked a push monitor, the executor is nested in a
call, or a remote reducer reads the results), so usually only large results are written.

Writing a compute backend
-------------------------
1. Subclass :class:`ComputeBackend`; set ``name`` and ``config_class`` (a dataclass whose fields
   are the keys of the config section named after the backend; :func:`wren.config.secret_field`
   for credentials). Checks across fields go in the dataclass's ``validate(self)``, which raises
   :class:`wren.errors.ConfigError` with a message saying what to set: it runs when the section
   is parsed, before anything is sent.
2. Implement :meth:`~ComputeBackend.invoke` (thread-safe: the executor calls it from up to 64
   threads at once, and again from other threads for retries). Return as soon as the calls are
   on their way.
3. Do no network I/O in ``__init__``; connect in :meth:`~ComputeBackend.start` or lazily.
4. A platform whose functions may call its own API can offer a remote invoker: send one
   payload with ``"remote_invoker": {"backend": name, ...}`` and the calls, and implement
   :meth:`~ComputeBackend.invoke_from_platform`, which the entry point runs inside that
   activation.
5. Offer it from a ``wren_compute_backends`` hook (``wren.ComputeBackendSpec(name, cls,
   config_cls)``), declare the hook module under the ``wren`` entry-point group, and run
   ``wren.testing.ComputeBackendConformance`` against it.
"""
from __future__ import annotations

import abc
import sys
from typing import Any, ClassVar, Protocol
from collections.abc import Sequence

from wren.config import WrenConfig
from wren.records import Call, Job


class ResultChannel(Protocol):
    """How a backend reports on calls to the executor. The executor passes one to every
    :meth:`ComputeBackend.invoke`; its methods are thread-safe, cheap, never raise for an
    unknown or already settled call, and may be called from any thread (a reader thread of
    yours, a pool's dispatcher). Report each call at most once as finished (``deliver`` or
    ``failed``); a second report of a settled call is ignored.
    """

    def deliver(self, status: dict[str, Any]) -> None:
        """A call finished (well or with the user's exception): ``status`` is the record the
        worker runtime returned (``WorkerRuntime.run``, ``run_calls(..., return_status=True)``,
        ``"statuses"`` of the entry point's answer). It is the same record the runtime writes
        to storage when the job has ``store_results``: delivering it as well only makes the
        result arrive sooner; the first record of a call wins. A failed status is subject to
        the user's ``retries`` like any other.
        From :class:`wren.worker.pool.WorkerPool`, for a job whose statuses are not stored, a
        large result arrives unpickled already, as ``status["result_value"]`` (or the error
        that unpickling it raised as ``status["result_error"]``) instead of ``status["result"]``."""

    def running(self, job_key: str, call_id: str) -> None:
        """A call started running on a worker (optional; feeds progress bars and the
        watchdog's clock)."""

    def failed(self, job_key: str, call_id: str, error: BaseException) -> None:
        """A call cannot finish and no status record will come: it was not delivered
        (:class:`wren.errors.InvocationError` or any exception), its worker died
        (:class:`wren.errors.WorkerDiedError`) or it ran past ``job.timeout``
        (:class:`wren.errors.CallTimeoutError`). The executor retries it when the user asked
        for retries; otherwise the future raises ``error``."""


class ComputeBackend(abc.ABC):
    """A place where calls run. See ``help(wren.compute.base)`` (the module) for how calls run,
    who enforces timeouts and reports dead workers, and how results come back.

    Class attributes a backend may set (all optional except ``name``):

    ``name`` (str)
        The word users write in ``backend=`` and the name of its config section. Must equal the
        name in the :class:`wren.ComputeBackendSpec` that offers the class.
    ``config_class`` (dataclass or None, default None)
        Documentation of the section's dataclass. wren itself uses the ``config_class`` of the
        **spec** (``ComputeBackendSpec(name, cls, config_class)``); keep the two the same. When
        the spec's is ``None``, ``__init__`` gets ``config=None``.
    ``manages_concurrency`` (bool, default False)
        False: wren's invoker hands the backend at most ``max_workers`` calls of an executor at
        a time (a slot frees when a call's result or failure arrives). True: ``invoke`` gets
        every call at once and the backend queues them itself, keeping at most
        ``wren_config.max_workers or default_max_workers`` running per executor (as
        ``WorkerPool.submit``'s ``cap`` does).
    ``delivers_results`` (bool, default False)
        True: the backend reports every call through the channel (``deliver`` or ``failed``),
        so the executor does not poll storage and workers skip writing status records (see
        "Results" in the module docstring). Leave False if any call could go unreported.
    ``runs_locally`` (bool, default False)
        Workers run on the client's machine, so ``local_only`` storage (the built-in
        ``localhost`` storage) is allowed; otherwise :meth:`check_storage` refuses it.
    ``bound_to_client_process`` (bool, default False)
        Calls die with the process that invoked them (local worker processes): an executor
        created inside a call then waits for its own calls before that call returns.
    ``price_per_gb_second`` (float or None, default None)
        Price per GB-second of worker memory, for ``job_summary()``'s cost estimate.

    Properties to override: :attr:`default_max_workers`, :attr:`max_payload_bytes`,
    :attr:`invoker_threads`.
    Set by wren after ``__init__``: ``storage`` (the executor's storage backend, or ``None``).
    Instance attributes set by ``__init__``: ``config`` (the parsed section), ``wren_config``
    (the ``wren`` section: ``max_workers``, ``runtime``, ``runtime_memory``...).

    Lifecycle: ``__init__`` (no I/O) -> :meth:`start` (once, before the first invoke) ->
    :meth:`invoke` (many times, from many threads) -> :meth:`close_owner` then :meth:`close`
    when the executor closes. One instance serves one executor.
    """

    #: The backend's name, as users write it in ``backend=`` and as its config section.
    name: ClassVar[str]
    #: Dataclass of the config section; ``None`` when the backend has no settings. wren uses the
    #: spec's ``config_class`` (keep both the same).
    config_class: ClassVar[type | None] = None
    #: True when the backend queues calls itself and enforces ``max_workers`` per executor;
    #: otherwise wren's invoker hands it at most ``max_workers`` calls at a time.
    manages_concurrency: ClassVar[bool] = False
    #: True when the backend reports every call through the channel (no storage polling).
    delivers_results: ClassVar[bool] = False
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

    @property
    def invoker_threads(self) -> int | None:
        """Threads wren's invoker hands calls to :meth:`invoke` from (``manages_concurrency``
        False). ``None``: one per ``max_workers``, up to 64, so that an ``invoke`` that waits
        for each call's request does not hold up the others. A backend whose ``invoke`` only
        queues the calls and returns needs few: each thread woken costs CPU that the client's
        launch rate pays for."""
        return None

    def start(self) -> None:
        """Get ready to invoke (connect, warm a pool). Called once, before the first invoke."""

    @abc.abstractmethod
    def invoke(self, job: Job, calls: Sequence[Call], channel: ResultChannel) -> None:
        """Start ``calls`` of ``job`` and return as soon as they are on their way.

        ``job``/``calls`` are :class:`wren.records.Job`/:class:`wren.records.Call`; the worker
        runtime must receive them unchanged (``wren.worker.protocol.dumps({"job": job, "calls":
        calls})`` for a wire, or pass the objects to ``WorkerPool``/``run_calls``). Every call
        must end in a status record (in storage or via ``channel.deliver``) or in
        ``channel.failed``. Raise (preferably :class:`wren.errors.InvocationError`, with a
        message that says why and what to do) when the batch cannot be delivered: each of its
        calls then fails with that error. Thread-safe: called concurrently from several
        threads, and for retries with ``call.attempt > 0``."""

    def invoke_from_platform(
        self, job: Job, calls: Sequence[Call], channel: ResultChannel, spec: dict[str, Any]
    ) -> None:
        """Start ``calls`` from inside the platform (a remote-invoker activation, see
        :mod:`wren.worker.fanout`): like :meth:`invoke`, but never through another remote
        invoker. ``spec`` is what the client's backend put in the payload, plus ``deadline``
        (epoch seconds) when the platform said when it stops the activation: give up on what
        is still retrying before then, and report those calls through ``channel.failed``.
        ``job`` is the job the calls belong to. The default raises :class:`NotImplementedError`."""
        raise NotImplementedError(f"backend {self.name!r} has no remote invoker")

    def cancel(self, job_key: str) -> None:
        """Drop calls of ``job_key`` that have not started (best effort)."""

    def close_owner(self, owner: str) -> None:
        """The executor ``owner`` (its ``executor_id``, ``job.executor_id``) closed: forget
        its queued calls (e.g. ``WorkerPool.forget_owner``). Called just before :meth:`close`."""

    def close(self) -> None:
        """Release what :meth:`start` acquired. Called when the executor closes."""

    def check_storage(self, storage: Any) -> None:
        """Refuse storage the workers cannot reach, with an error that says what to use
        (:class:`wren.errors.ConfigError`). Called when the executor is built, before anything
        is stored or invoked. The default refuses ``local_only`` storage unless
        ``runs_locally``."""
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
        """Build the runtime image ``name`` (``wren runtime build``).

        :param name: the runtime (image) name.
        :param dockerfile: a Dockerfile to build from (default: the backend's own recipe).
        :param options: backend-specific options (e.g. ``push=True``).
        :raises NotImplementedError: by default: the backend has no runtimes to build.
        """
        raise NotImplementedError(f"backend {self.name!r} has no runtimes to build")

    def deploy_runtime(self, name: str, memory: int | None = None, **options: Any) -> dict[str, Any]:
        """Create or update the deployment of runtime ``name`` (``wren runtime deploy``/``update``).

        :param name: the runtime (image) name.
        :param memory: the workers' memory in MB (default: the config's ``runtime_memory``).
        :param options: backend-specific options.
        :returns: a dict describing what was deployed (keys are the backend's).
        :raises NotImplementedError: by default: the backend has no runtimes to deploy.
        """
        raise NotImplementedError(f"backend {self.name!r} has no runtimes to deploy")

    def list_runtimes(self) -> list[dict[str, Any]]:
        """The deployed runtimes (``wren runtime list``): a dict per deployment (keys are the
        backend's, e.g. ``runtime`` and ``memory``). The default: none."""
        return []

    def clean_resources(self, all: bool = False) -> list[str]:  # noqa: A002 - the CLI's word
        """Remove what the backend left running or deployed for wren (``wren clean``): e.g.
        worker containers of clients that are gone; with ``all``, every wren resource.
        Returns a line per thing removed."""
        return []

    def delete_runtime(self, name: str, memory: int | None = None) -> None:
        """Delete the deployments of runtime ``name`` (``wren runtime delete``).

        :param name: the runtime (image) name.
        :param memory: delete only its deployment of this memory size, in MB (default: all).
        :raises NotImplementedError: by default: the backend has no runtimes to delete.
        """
        raise NotImplementedError(f"backend {self.name!r} has no runtimes to delete")
