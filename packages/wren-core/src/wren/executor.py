"""``FunctionExecutor``: the user's entry point, a thin facade over :mod:`wren.client`.

It builds the executor's parts from the config and plugins (storage, compute backend,
monitor), then delegates: :mod:`~wren.client.submission` checks and packs each call,
:mod:`~wren.client.dispatch` sends it, :mod:`~wren.client.calls` and
:mod:`~wren.client.attempts` settle it, :mod:`~wren.client.waiting` waits for it,
:mod:`~wren.client.journal` and :mod:`~wren.client.reporting` keep what is needed later.

Options the submitting methods (:meth:`FunctionExecutor.call_async`, ``map``, ``map_reduce``) share:

``extra_env``
    A mapping of environment variables set for the calls on the workers (default: none).
``runtime_memory``
    Memory of each worker in MB, for backends that set one (default: the config's ``wren.runtime_memory``).
``timeout``
    Seconds each call may run before it fails with :class:`wren.CallTimeoutError` (default: the
    config's ``wren.runtime_timeout``, 600).
``include_modules``
    Local modules shipped with the function: an empty sequence (the default) finds the ones it needs
    automatically, ``None`` ships none, a non-empty list ships exactly those.
``exclude_modules``
    Modules left out of what is found automatically (default: none).
``chunk_size``, ``chunk_n`` (PyWren) or ``obj_chunk_size``, ``obj_chunk_number`` (Lithops)
    Split each storage object of the input into chunks of that many bytes, or into that many
    chunks, one call per chunk (default: one call per object).
``obj_newline``
    ``"\\n"`` (the default) or ``"\\r\\n"``: chunks keep whole lines; ``None``: exact-size chunks.
``chunksize``
    Lithops' items per worker invocation: checked and accepted; every wren call is its own invocation.
"""
from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from typing import Any
from collections.abc import Callable, Mapping, Sequence

from wren import job as jobmod
from wren.client import compat, mapreduce, waiting
from wren.client.attempts import Attempts, Watchdog, exception_names
from wren.client.calls import CallTracker
from wren.client.dispatch import Dispatcher
from wren.client.futures_list import FuturesList
from wren.client.reporting import JobLog
from wren.client.submission import Identity, Submitter, worker_sections
from wren.client.waiting import ALL_COMPLETED, ALWAYS, ANY_COMPLETED
from wren.config import Config, load_config, parse_section
from wren.errors import ExecutorClosedError, InvalidInputError
from wren.future import ResponseFuture, user_facing
from wren.plugins import KNOWN_DISTRIBUTIONS, check_sections, get_registry
from wren.storage.client import build_storage
from wren.storage.retrying import retrying_storage
from wren.worker import context as worker_context

logger = logging.getLogger("wren.executor")

_live: weakref.WeakSet[FunctionExecutor] = weakref.WeakSet()


def _setup_logging(level: str | None) -> None:
    """Set the ``wren`` logger's level; add a handler only when neither it nor the root logger
    has one (a configured root logger prints wren's lines already: no line twice)."""
    if not level:
        return
    log = logging.getLogger("wren")
    log.setLevel(str(level).upper())
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
        log.addHandler(handler)


class FunctionExecutor:
    """Runs functions on the configured compute backend. Takes :func:`wren.function_executor`'s ``backend``, ``storage``,
    ``config``, ``runtime``, ``runtime_memory``, ``log_level``, ``max_workers`` and ``monitoring`` (documented there)."""

    def __init__(
        self,
        backend: str | None = None,
        storage: str | None = None,
        config: Mapping[str, Any] | None = None,
        runtime: str | None = None,
        runtime_memory: int | None = None,
        log_level: str | None = None,
        max_workers: int | None = None,
        monitoring: str | None = None,
        **kwargs: Any,
    ):
        compat.executor_kwargs(kwargs)  # the peers' spellings (workers=, compute_backend=...)
        if kwargs.get("retry_on") is not None:
            kwargs["retry_on"] = exception_names(kwargs["retry_on"])
        if "rabbitmq_monitor" in kwargs:  # PyWren for IBM Cloud's spelling
            if kwargs.pop("rabbitmq_monitor"):
                monitoring = monitoring or "rabbitmq"
        overrides = compat.merge_overrides(
            dict(backend=backend, storage=storage, runtime=runtime, runtime_memory=runtime_memory,
                 max_workers=max_workers, monitoring=monitoring, log_level=log_level or None), kwargs)
        ctx = worker_context.current()
        nested = ctx is not None and ctx.get("config") is not None
        if nested and config is None:
            cfg = load_config(ctx["config"], overrides, read_file=False, read_env=False)  # type: ignore[index]
        else:
            cfg = load_config(config, overrides)
        self.config: Config = cfg
        wcfg = cfg.wren
        _setup_logging(wcfg.log_level)
        registry = get_registry()
        check_sections(cfg.sections, registry)
        spec = registry.get("compute", wcfg.backend)
        compute_cfg = parse_section(spec.config_class, wcfg.backend, cfg.section(wcfg.backend)) if spec.config_class else None
        self.storage_backend = retrying_storage(build_storage(cfg), wcfg.storage_retry_seconds)
        self.compute = spec.backend_class(compute_cfg, wcfg)
        self.compute.storage = self.storage_backend  # runtime metadata is cached there too
        self.compute.check_storage(self.storage_backend)
        monitor_spec = registry.get("monitor", wcfg.monitoring)
        self.backend = wcfg.backend
        self.max_workers = wcfg.max_workers or self.compute.default_max_workers
        self.bucket = self.storage_backend.default_bucket

        self._identity = Identity.nested_in(ctx) if nested else Identity.new_root()  # type: ignore[arg-type]
        self.executor_id = self._identity.executor_id
        self.prefix = self._identity.prefix
        self._nested = nested
        self._clean_on_exit = False if nested else wcfg.clean_on_exit  # a nested one's caller reads later
        self._bound_to_process = self.compute.bound_to_client_process and nested
        # the backend's own channel (the localhost pool's pipes) replaces storage polling; a
        # push monitor the user chose (rabbitmq) is used as asked
        direct = bool(getattr(self.compute, "delivers_results", False)) and wcfg.monitoring == "storage"
        self._closed = False
        self._jobs: dict[str, dict[str, Any]] = {}
        self._attached: list[tuple[str, str]] = []
        self._job_log = JobLog(self._jobs)

        self._attempts = Attempts(wcfg, self._relaunch, lambda: self._closed, self.storage_backend)
        self._calls = CallTracker(self._attempts.failed, self._finished)
        self._watchdog = Watchdog(self._attempts, self._calls.failed, self._calls.futures)
        self.monitor = monitor_spec.monitor_class(
            self.storage_backend, self._calls.on_status, self._calls.on_monitor_error, wcfg.monitor_interval,
            parse_section(monitor_spec.config_class, wcfg.monitoring, cfg.section(wcfg.monitoring))
            if monitor_spec.config_class else None,
        )
        self._dispatch = Dispatcher(
            self.compute, self.max_workers, self._calls, self.monitor, direct,
            self._new_storage_monitor,
        )
        self._submitter = Submitter(
            cfg, self._identity, self.storage_backend, self.compute,
            worker_sections(cfg, registry, KNOWN_DISTRIBUTIONS), store_results=not direct,
        )
        if nested:
            worker_context.register_executor(self)
        _live.add(self)
        # warm the backend (the localhost pool) while the user prepares the first job
        threading.Thread(target=self._dispatch.warm, name="wren-start", daemon=True).start()
        logger.info("executor %s: backend %s, storage %s, max_workers %d",
                    self.executor_id, self.backend, self.storage_backend.name, self.max_workers)

    def _new_storage_monitor(self) -> Any:
        from wren.monitors.storage import StorageMonitor

        return StorageMonitor(self.storage_backend, self._calls.on_status, self._calls.on_monitor_error,
                              self.config.wren.monitor_interval)

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> FunctionExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError("a wren executor cannot be pickled or returned by a call (it holds its signing key); "
                        "return its futures, or their results, instead")

    futures = property(lambda self: self._calls.listed(), doc=(
        "Futures not finished, not yet read, or still held by your program (get_result lets go of the ones "
        "it read: results do not pile up in a long-lived executor; job_summary and plot count every call)."))

    def __repr__(self) -> str:
        return f"<wren.FunctionExecutor {self.executor_id} backend={self.backend!r} storage={self.storage_backend.name!r}>"

    def close(self, clean: bool | None = None) -> None:
        """Stop monitoring, release the backend and clean temporary data if ``clean`` (default: ``wren.clean_on_exit``)."""
        if self._closed:
            return
        self._closed = True
        self._watchdog.stop()
        from wren.client import reporting

        try:
            reporting.save_logs(self._calls.everything())
        except OSError as exc:  # pragma: no cover - a full disk must not break closing
            logger.warning("could not save the calls' logs: %s", exc)
        self._dispatch.close(self.executor_id)
        self._calls.fail_pending(ExecutorClosedError(
            f"executor {self.executor_id} was closed before this call finished; its result is not read"))
        self._submitter.lease.release()
        if clean if clean is not None else self._clean_on_exit:
            try:
                self.clean()
            except Exception as exc:  # pragma: no cover - best effort at exit
                logger.warning("could not clean %s: %s", self.prefix, exc)

    # -- the result channel backends report through is the call tracker (wren.client.calls) -----
    def running(self, job_key: str, call_id: str) -> None:
        """The call ``call_id`` of the job ``job_key`` started (a push monitor's start event)."""
        self._calls.running(job_key, call_id)

    def _finished(self, future: ResponseFuture) -> None:
        self._job_log.finished(future)
        self._attempts.forget(future)
        self._dispatch.release(future)

    def _relaunch(self, future: ResponseFuture, job: Any, call: Any, attempt: int) -> None:
        self._dispatch.resend(future, job, call, attempt)

    # -- submitting -----------------------------------------------------------------------------
    def _submit(self, func: Callable[..., Any], arguments: list[jobmod.CallArgs], kind: str,
                **options: Any) -> list[ResponseFuture]:
        if self._closed:
            raise InvalidInputError("this executor is closed; create a new one with wren.function_executor()")
        job, calls, futures = self._submitter.pack(func, arguments, kind, **options)
        events = self.monitor.job_events(job)
        if events:
            job.events = events
        for f in futures:
            f._executor = self
        self._attempts.track(job, calls, futures)
        self._calls.add(futures)
        self._jobs[job.job_key] = {"job_id": job.job_id, "kind": kind, "calls": len(calls), "func": job.func_name,
                                   "submitted": time.time(), "timeout": job.timeout, "prefix": job.prefix}
        if not self._dispatch.direct and not self._nested:
            from wren.client import journal

            journal.write_executor(self.executor_id, self.prefix, self.bucket, self.storage_backend.name, self.backend,
                                   self._identity.secret, self._jobs)
        self._dispatch.send(job, calls, futures)
        self._watchdog.kick()
        logger.info("job %s: %d call(s) of %s submitted", job.job_key, len(calls), job.func_name)
        return futures

    def call_async(self, func: Callable[..., Any], data: Any = (), extra_env: Mapping[str, Any] | None = None,
                   runtime_memory: int | None = None, timeout: float | None = None,
                   include_modules: Sequence[str] | None = (),
                   exclude_modules: Sequence[str] | None = None) -> ResponseFuture:
        """Run ``func`` once with ``data`` (a tuple spreads, a dict spreads as keywords, anything else is the one argument;
        ``()`` calls it without arguments); returns its future. ``extra_env``, ``runtime_memory`` (MB), ``timeout``
        (seconds), ``include_modules``, ``exclude_modules``: the submission options of :mod:`wren.executor`."""
        jobmod.check_function(func)
        arguments, resolve = self._submitter.call_arguments(data, self._wait_inputs)
        return self._submit(func, arguments, "async", resolve_futures=resolve, extra_env=extra_env, runtime_memory=runtime_memory,
                            timeout=timeout, include_modules=include_modules, exclude_modules=exclude_modules)[0]

    def map(self, map_function: Callable[..., Any], map_iterdata: Any, extra_args: Any = None,
            extra_env: Mapping[str, Any] | None = None, runtime_memory: int | None = None,
            timeout: float | None = None, chunk_size: int | None = None, chunk_n: int | None = None,
            include_modules: Sequence[str] | None = (), exclude_modules: Sequence[str] | None = None,
            obj_chunk_size: int | None = None, obj_chunk_number: int | None = None,
            obj_newline: str | None = "\n", chunksize: int | None = None, **peer_options: Any) -> FuturesList:
        """Run ``map_function`` once per item of ``map_iterdata``; futures in input order. Items may be (or hold) futures:
        each call gets their results. ``extra_args`` are added to every item's arguments. ``extra_env``, ``runtime_memory``,
        ``timeout``, ``include_modules``, ``exclude_modules``, ``chunk_size``, ``chunk_n``, ``obj_chunk_size``,
        ``obj_chunk_number``, ``obj_newline``, ``chunksize``: the submission options of :mod:`wren.executor`."""
        chunking = compat.object_chunking(chunk_size, chunk_n, obj_chunk_size, obj_chunk_number, obj_newline, chunksize,
                                          peer_options)
        extra_args = peer_options.get("extra_params", extra_args)  # early PyWren 1.x's name
        futures, _ = self._map(map_function, map_iterdata, extra_args, chunking, kind="map",
                               extra_env=extra_env, runtime_memory=runtime_memory, timeout=timeout,
                               include_modules=include_modules, exclude_modules=exclude_modules)
        return FuturesList(futures, self)

    def _map(self, func: Callable[..., Any], iterdata: Any, extra_args: Any,
             chunking: tuple[int | None, int | None, str | None], kind: str,
             **options: Any) -> tuple[list[ResponseFuture], list[list[int]] | None]:
        jobmod.check_function(func)
        binder = jobmod.Binder.of(func)
        arguments, objs, groups, resolve = self._submitter.map_arguments(
            func, iterdata, extra_args, chunking, binder, self._wait_inputs)
        if not arguments:
            return [], groups
        return self._submit(func, arguments, kind, objs=objs, binder=binder, resolve_futures=resolve, **options), groups

    def _wait_inputs(self, fs: list[ResponseFuture]) -> None:
        self.wait(self._select(fs), show_progressbar=False)

    def map_reduce(self, map_function: Callable[..., Any], map_iterdata: Any, reduce_function: Callable[..., Any],
                   extra_args: Any = None, extra_env: Mapping[str, Any] | None = None,
                   map_runtime_memory: int | None = None, reduce_runtime_memory: int | None = None,
                   timeout: float | None = None, chunk_size: int | None = None, chunk_n: int | None = None,
                   reducer_wait_local: bool = False, reducer_one_per_object: bool = False,
                   include_modules: Sequence[str] | None = (), exclude_modules: Sequence[str] | None = None,
                   obj_chunk_size: int | None = None, obj_chunk_number: int | None = None,
                   obj_newline: str | None = "\n", obj_reduce_by_key: bool = False, extra_args_reduce: Any = None,
                   spawn_reducer: int | str | None = None,
                   chunksize: int | None = None, **peer_options: Any) -> FuturesList:
        """Map ``map_function`` over ``map_iterdata`` with ``extra_args`` (as :meth:`map`), then reduce:
        ``reduce_function(results, *extra_args_reduce)`` gets the list of map results. Returns the map futures followed by
        the reducer future(s); ``get_result()`` on them returns the reducer's value (a list, one per object, with
        ``reducer_one_per_object``/``obj_reduce_by_key``). ``map_runtime_memory``/``reduce_runtime_memory``: MB per side;
        ``extra_env``, ``timeout``, ``include_modules``, ``exclude_modules``, ``chunk_size``, ``chunk_n``, ``obj_chunk_size``,
        ``obj_chunk_number``, ``obj_newline``, ``chunksize`` as for :meth:`map`. ``spawn_reducer``, ``reducer_wait_local``:
        see :mod:`wren.client.mapreduce`."""
        return mapreduce.run(
            self, map_function, map_iterdata, reduce_function, extra_args=extra_args,
            extra_args_reduce=extra_args_reduce, reducer_wait_local=reducer_wait_local,
            chunking=compat.object_chunking(chunk_size, chunk_n, obj_chunk_size, obj_chunk_number, obj_newline,
                                            chunksize, peer_options),
            per_object=reducer_one_per_object or obj_reduce_by_key, spawn_reducer=spawn_reducer,
            map_runtime_memory=map_runtime_memory, reduce_runtime_memory=reduce_runtime_memory,
            common=dict(extra_env=extra_env, timeout=timeout, include_modules=include_modules,
                        exclude_modules=exclude_modules))

    # -- waiting --------------------------------------------------------------------------------
    def _select(self, fs: Any) -> list[ResponseFuture]:
        if fs is None:
            return list(self._calls.futures)
        if not isinstance(fs, (ResponseFuture, list, tuple, set, frozenset)) and not hasattr(fs, "__iter__"):
            raise InvalidInputError(f"fs must be a future or a list of futures, got {type(fs).__name__} {fs!r}")
        items: list[Any] = [fs] if isinstance(fs, ResponseFuture) else list(fs)
        bad = [f for f in items if not isinstance(f, ResponseFuture)]
        if bad:
            raise InvalidInputError(f"fs must hold futures returned by this executor, got {type(bad[0]).__name__}")
        selected: list[ResponseFuture] = items
        for f in selected:
            if f._executor is None or (f._executor is not self and getattr(f._executor, "_closed", False)):
                self._adopt([f])
        return selected

    def _adopt(self, futures: list[ResponseFuture]) -> None:
        """Take charge of futures made elsewhere (returned by a call, or unpickled)."""
        watch = []
        for f in futures:
            if f._executor is self:
                continue
            secret = self._identity.key_of(f.executor_id)
            if secret is None:
                raise InvalidInputError(
                    f"future {f.job_key}/{f.call_id} belongs to another executor ({f.executor_id}); "
                    "wait for it with that executor"
                )
            f._executor = self
            f._secret = secret
            self._calls.add([f], listed=False)
            if not f.ready:
                watch.append(f)
        if watch:
            # the call that made these returned, so their status is (or will be) in storage
            self._dispatch.storage_monitor().watch(watch)

    def resolve_nested(self, value: Any, throw_except: bool, timeout: float | None) -> Any:
        """The results of futures a call returned (its own executor's calls): ``value`` is one future or a list of them;
        ``throw_except`` and ``timeout`` as for :meth:`get_result`."""
        single = not isinstance(value, (list, tuple))
        fs = [value] if single else list(value)
        self._adopt(fs)
        results = self.get_result(fs, throw_except=throw_except, timeout=timeout, show_progressbar=False)
        return results[0] if single else results

    @user_facing
    def wait(self, fs: Any = None, return_when: str | int = ALL_COMPLETED, throw_except: bool = True,
             timeout: float | None = None, show_progressbar: bool = True,
             download_results: bool = False, **peer_options: Any) -> tuple[list[ResponseFuture], list[ResponseFuture]]:
        """Wait for the calls ``fs`` (a future or a list; default: every call of this executor); returns ``(done, not_done)``.
        ``return_when``: ``wren.ALL_COMPLETED`` (default), ``wren.ANY_COMPLETED``, ``wren.ALWAYS`` (return at once) or a
        percentage (an int 1..100) of the calls. With ``throw_except=True`` the first failed call's exception is raised as
        soon as it is known. ``timeout`` (seconds) bounds the wait. ``show_progressbar``: draw a progress bar (if
        ``wren.progressbar``). ``download_results=True`` also fetches the finished calls' results. The peers'
        ``threadpool_size``/``wait_dur_sec`` are accepted."""
        waiting.check_wait_args(return_when, timeout)
        compat.check_peer_wait_options(peer_options)
        fs = self._select(fs)
        bar = waiting.progress_bar(len(fs), show_progressbar and self.config.wren.progressbar)
        try:
            done, not_done = waiting.wait_for(
                self._calls, fs, waiting.normalize_return_when(return_when), throw_except, timeout, bar, self._watchdog.tick,
                lambda pending: waiting.describe_pending(pending, self._dispatch.pending, self.max_workers))
        except KeyboardInterrupt:
            self._dispatch.interrupted(fs)
            raise
        if download_results:
            waiting.download(done)
        return FuturesList(done, self), FuturesList(not_done, self)

    @user_facing
    def get_result(self, fs: Any = None, throw_except: bool = True, timeout: float | None = None,
                   show_progressbar: bool = True, **peer_options: Any) -> Any:
        """Wait for the calls ``fs`` (a future or a list) and return their results in order; ``show_progressbar`` as for
        :meth:`wait`; after ``timeout`` seconds raises :class:`wren.WaitTimeoutError`. With no ``fs``: every future of this
        executor whose result was not returned yet, in submission order (a single value when that is one ``call_async``
        future or one reducer). The map futures of a ``map_reduce`` are left out: its reducer's value is returned. A
        failed call re-raises its exception, or gives ``None`` with ``throw_except=False``."""
        compat.check_peer_wait_options(peer_options)
        if fs is None:
            selected, single = mapreduce.results_wanted([f for f in self._calls.futures if not f._read], explicit=False)
        elif isinstance(fs, ResponseFuture):
            selected, single = self._select(fs), True
        else:
            selected, single = mapreduce.results_wanted(self._select(fs), explicit=True)
        if not selected:
            return None if single else []
        _, not_done = self.wait(selected, ALL_COMPLETED, throw_except, timeout, show_progressbar)
        results = waiting.collect(selected, not_done, timeout, throw_except)
        self._calls.release([f for f in selected if f._read], now=True)
        return results[0] if single else results

    @user_facing
    async def get_result_async(self, fs: Any = None, throw_except: bool = True, timeout: float | None = None) -> Any:
        """:meth:`get_result` for asyncio code (the event loop runs meanwhile); same ``fs``, ``throw_except``, ``timeout``."""
        from wren.client.completion import await_ready, run_off_loop

        selected = [f for f in self._calls.futures if not f._read and not f.internal] if fs is None else self._select(fs)
        await await_ready(selected, timeout, throw_except)  # cancelling this frees everything
        return await run_off_loop(self.get_result, fs, throw_except, None, False)

    # -- reattaching, cleaning, reporting -------------------------------------------------------
    def attach(self, executor_id: str) -> list[ResponseFuture]:
        """Reattach to the jobs of the executor ``executor_id`` whose client is gone (crashed, killed) and
        return their futures, to wait for and read as usual (``get_result(futures)``).

        Works for backends whose calls outlive the client (every cloud backend); the record
        needed is kept on the machine that submitted the jobs.
        """
        from wren.client import journal

        rec = journal.read(executor_id)
        futures = journal.futures_of(rec, self.bucket, self.storage_backend.name)
        for f in futures:
            f._executor = self
        self._calls.add(futures)
        self._attached.append((executor_id, rec["prefix"]))
        self._dispatch.storage_monitor().watch(futures)
        self._watchdog.kick()
        return futures

    def clean(self, fs: Any = None, cs: Any = None, clean_cloudobjects: bool = True, force: bool = True,
              **peer_options: Any) -> int:
        """Delete temporary data: the jobs of the futures ``fs``, or everything of this executor (and of executors it
        reattached to), and the cloud objects ``cs``; ``clean_cloudobjects=False`` keeps the cloud objects calls made.
        Returns the number of objects removed. ``force`` (Lithops) is accepted: wren cleans only on request or at close,
        so there is nothing unfinished to keep."""
        removed = compat.delete_cloudobjects(self.storage_backend, cs)
        if cs is not None and fs is None:
            return removed
        if fs is None:
            prefixes = [self.prefix + "/"] + [p + "/" for _, p in self._attached]
        else:
            prefixes = sorted({f.job_prefix + "/" for f in self._select(fs)})
        removed += compat.delete_prefixes(self.storage_backend, self.bucket, prefixes, not clean_cloudobjects)
        if fs is None:
            from wren.client import journal

            self._submitter.forget_uploads()
            for eid in [self.executor_id] + [e for e, _ in self._attached]:
                journal.remove(eid)
        logger.info("cleaned %d object(s) under %s", removed, ", ".join(prefixes))
        return removed

    def plot(self, fs: Any = None, dst: str | None = None) -> list[Any]:
        """The execution timeline and concurrency histogram of ``fs`` (default: every call) as two matplotlib Figures
        (shown inline in a notebook; your matplotlib backend is left alone). ``dst``: also write ``<dst>_timeline.png``
        and ``<dst>_histogram.png``."""
        from wren.client import reporting

        fs = self._calls.everything() if fs is None else self._select(fs)
        return reporting.plot(fs, dst, {k: m["func"] for k, m in self._jobs.items()})

    def job_summary(self) -> list[dict[str, Any]]:
        """Per job: calls, successes, failures and phase times (seconds)."""
        from wren.client import reporting

        return reporting.job_summary(self._jobs, self._calls.of_job, self.compute.price_per_gb_second,
                                     self.config.wren.runtime_memory)


@atexit.register
def _close_all() -> None:
    for ex in list(_live):
        try:
            ex.close()
        except Exception:  # pragma: no cover
            pass


def function_executor(backend: str | None = None, storage: str | None = None,
                      config: Mapping[str, Any] | None = None, runtime: str | None = None,
                      runtime_memory: int | None = None, log_level: str | None = None,
                      max_workers: int | None = None, monitoring: str | None = None,
                      **kwargs: Any) -> FunctionExecutor:
    """Create an executor. With no arguments and no config: localhost compute, local storage.

    ``backend``: ``localhost``, ``code_engine``, ``ibm_cf``, ``openwhisk``, ``knative``,
    ``docker`` or any installed plugin. ``storage``: ``localhost``, ``ibm_cos``... ``config``:
    a dict of sections (see :mod:`wren.config`). Other keyword arguments set keys of the
    ``wren`` section (``clean_on_exit=False``, ``runtime_timeout=60``...).

    :param backend: the compute backend (default: the config's ``wren.backend``).
    :param storage: the storage backend (default: the config's ``wren.storage``).
    :param config: a dict of config sections, used instead of the config file and environment
        (default: those).
    :param runtime: the runtime (container image) the workers run, for backends that have
        runtimes (default: the backend's own).
    :param runtime_memory: memory of each worker in MB, for backends that set one.
    :param log_level: the ``wren`` logger's level (``"INFO"``, ``"DEBUG"``...; default: left alone).
    :param max_workers: how many calls run at once (default: the backend's).
    :param monitoring: how the client learns that calls finished: ``storage`` (the default,
        polls storage) or a monitor plugin such as ``rabbitmq``.
    :returns: a :class:`FunctionExecutor` (a context manager: ``with`` closes it).
    :raises ConfigError: for an invalid or incomplete config.
    :raises PluginError: when a named backend, storage or monitor is not installed.
    """
    return FunctionExecutor(backend=backend, storage=storage, config=config, runtime=runtime,
                            runtime_memory=runtime_memory, log_level=log_level, max_workers=max_workers,
                            monitoring=monitoring, **kwargs)


class LocalhostExecutor(FunctionExecutor):
    """Lithops' ``LocalhostExecutor``: a :class:`FunctionExecutor` on the localhost backend.

    Takes :func:`wren.function_executor`'s keyword arguments but ``backend`` (always ``localhost``).
    """

    def __init__(self, **kwargs: Any):
        kwargs["backend"] = "localhost"
        super().__init__(**kwargs)


class ServerlessExecutor(FunctionExecutor):
    """Lithops' ``ServerlessExecutor``: a :class:`FunctionExecutor` on the configured backend.

    Takes :func:`wren.function_executor`'s ``backend``, ``storage``, ``config``, ``runtime``, ``runtime_memory``,
    ``log_level``, ``max_workers`` and ``monitoring`` (documented there).
    """


def local_executor(**kwargs: Any) -> FunctionExecutor:
    """``function_executor(backend='localhost', ...)``."""
    return function_executor(backend="localhost", **kwargs)


def code_engine_executor(**kwargs: Any) -> FunctionExecutor:
    """``function_executor(backend='code_engine', ...)`` (needs wren-backend-codeengine)."""
    return function_executor(backend="code_engine", **kwargs)


def ibm_cf_executor(**kwargs: Any) -> FunctionExecutor:
    """``function_executor(backend='ibm_cf', ...)`` (needs wren-backend-ibmcf)."""
    return function_executor(backend="ibm_cf", **kwargs)


def openwhisk_executor(**kwargs: Any) -> FunctionExecutor:
    """``function_executor(backend='openwhisk', ...)`` (needs wren-backend-openwhisk)."""
    return function_executor(backend="openwhisk", **kwargs)


def knative_executor(**kwargs: Any) -> FunctionExecutor:
    """``function_executor(backend='knative', ...)`` (needs wren-backend-knative)."""
    return function_executor(backend="knative", **kwargs)


def docker_executor(**kwargs: Any) -> FunctionExecutor:
    """``function_executor(backend='docker', ...)`` (needs wren-backend-docker)."""
    return function_executor(backend="docker", **kwargs)


__all__ = [
    "ALL_COMPLETED", "ALWAYS", "ANY_COMPLETED", "FunctionExecutor", "LocalhostExecutor", "ServerlessExecutor",
    "code_engine_executor", "docker_executor",
    "function_executor", "ibm_cf_executor", "knative_executor", "local_executor", "openwhisk_executor",
]
