"""``FunctionExecutor``: the user's entry point.

It checks everything it can on the client (function, iterdata, argument binding, data limits,
config, plugin names) before storing or invoking anything, then stores the function (once per
executor, content-addressed and signed) and any large call data, and hands the calls to the
compute backend. Status records come back through the backend's own channel or the monitor.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import hashlib
import hmac
import itertools
import logging
import os
import random
import sys
import threading
import time
import uuid
import weakref
from typing import Any
from collections.abc import Callable, Iterable, Mapping, Sequence

from wren import job as jobmod
from wren import serialize
from wren.config import Config, load_config, parse_section
from wren.errors import (
    CallTimeoutError,
    error_kind,
    StorageNoSuchBucketError,
    InvalidInputError,
    WaitTimeoutError,
)
from wren.future import INVOKED, RUNNING, ResponseFuture, contains_futures
from wren.plugins import check_sections, get_registry
from wren.storage.client import Storage, build_storage
from wren.version import __version__
from wren.worker import context as worker_context
from wren.worker.runtime import PYTHON_VERSION

logger = logging.getLogger("wren.executor")

ALL_COMPLETED = "ALL_COMPLETED"
ANY_COMPLETED = "ANY_COMPLETED"
ALWAYS = "ALWAYS"

JOBS_PREFIX = "wren.jobs"
_counter = itertools.count()
_live: weakref.WeakSet[FunctionExecutor] = weakref.WeakSet()


def derive_secret(root_id: str, root_secret: bytes, executor_id: str) -> bytes | None:
    """Secret of a nested executor: HMAC chain from its root executor's secret."""
    if executor_id == root_id:
        return root_secret
    if not executor_id.startswith(root_id + "."):
        return None
    secret = root_secret
    for part in executor_id[len(root_id) + 1:].split("."):
        secret = hmac.new(secret, part.encode(), hashlib.sha256).digest()
    return secret


def _worker_sections(cfg: Config, registry: Any) -> dict[str, Any]:
    """The config workers get (nested executors inherit it; a remote invoker builds its backend
    from it): every section but those of the compute backends and monitors not in use. Storage
    sections all travel (partitioned data may live in another storage)."""
    from wren.plugins import KNOWN_DISTRIBUTIONS

    wcfg = cfg.wren
    unused = (set(KNOWN_DISTRIBUTIONS["compute"]) | set(registry.provided("compute"))) - {wcfg.backend, "localhost"}
    unused |= (set(KNOWN_DISTRIBUTIONS["monitor"]) | set(registry.provided("monitor"))) - {wcfg.monitoring}
    return {name: section for name, section in cfg.to_dict().items() if name not in unused}


def _setup_logging(level: str | None) -> None:
    if not level:
        return
    log = logging.getLogger("wren")
    log.setLevel(str(level).upper())
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
        log.addHandler(handler)


class FunctionExecutor:
    """Runs functions on the configured compute backend. See :func:`wren.function_executor`."""

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
        if "retry_on" in kwargs and kwargs["retry_on"] is not None:
            kwargs["retry_on"] = _exception_names(kwargs["retry_on"])
        if "rabbitmq_monitor" in kwargs:  # PyWren for IBM Cloud's spelling
            if kwargs.pop("rabbitmq_monitor"):
                monitoring = monitoring or "rabbitmq"
        overrides = dict(
            backend=backend,
            storage=storage,
            runtime=runtime,
            runtime_memory=runtime_memory,
            log_level=log_level,
            max_workers=max_workers,
            monitoring=monitoring,
            **kwargs,
        )
        ctx = worker_context.current()
        self._nested = ctx is not None and ctx.get("config") is not None
        if self._nested and config is None:
            cfg = load_config(ctx["config"], overrides, read_file=False, read_env=False)  # type: ignore[index]
        else:
            cfg = load_config(config, overrides)
        self.config: Config = cfg
        wcfg = cfg.wren
        _setup_logging(wcfg.log_level)
        registry = get_registry()
        check_sections(cfg.sections, registry)
        spec = registry.get("compute", wcfg.backend)
        compute_cfg = (
            parse_section(spec.config_class, wcfg.backend, cfg.section(wcfg.backend))
            if spec.config_class
            else None
        )
        self.storage_backend = build_storage(cfg)
        self.compute = spec.backend_class(compute_cfg, wcfg)
        self.compute.storage = self.storage_backend  # runtime metadata is cached there too
        self.compute.check_storage(self.storage_backend)
        monitor_spec = registry.get("monitor", wcfg.monitoring)
        self.backend = wcfg.backend
        self.max_workers = wcfg.max_workers or self.compute.default_max_workers
        self.bucket = self.storage_backend.default_bucket
        # what nested executors inherit, sent with every job: built once, without the sections
        # of compute backends and monitors this executor does not use (their credentials stay here)
        self._worker_config = _worker_sections(cfg, registry)
        self._worker_config.setdefault("wren", {})["backend"] = self.backend

        if self._nested:
            assert ctx is not None
            ctx.setdefault("executors", [])
            n = len(ctx["executors"])
            parent_id = ctx["executor_id"]
            self.executor_id = f"{parent_id}.{ctx['job_id']}-{ctx['call_id']}-{n}"
            self._root_id = ctx["root_id"]
            self._root_secret = bytes.fromhex(ctx["root_secret"])
            self._secret = derive_secret(self._root_id, self._root_secret, self.executor_id)  # type: ignore[assignment]
            self.prefix = f"{ctx['executor_prefix']}/nested/{ctx['job_id']}-{ctx['call_id']}-{n}"
            self._clean_on_exit = False  # the caller reads these results after we are gone
            worker_context.register_executor(self)
        else:
            self.executor_id = f"{uuid.uuid4().hex[:8]}-{next(_counter)}"
            self._root_id = self.executor_id
            self._root_secret = os.urandom(32)
            self._secret = self._root_secret
            self.prefix = f"{JOBS_PREFIX}/{self.executor_id}"
            self._clean_on_exit = wcfg.clean_on_exit
        self._bound_to_process = self.compute.bound_to_client_process and self._nested
        # the backend's own channel (the localhost pool's pipes) replaces storage polling; a
        # push monitor the user chose (rabbitmq) is used as asked
        self._direct = bool(getattr(self.compute, "delivers_results", False)) and wcfg.monitoring == "storage"

        self.futures: list[ResponseFuture] = []
        self._by_key: dict[tuple[str, str], ResponseFuture] = {}
        self._cond = threading.Condition()
        self._waiters: set[_Waiter] = set()
        self._job_counter = itertools.count()
        self._uploaded_funcs: set[str] = set()
        self._attached: list[tuple[str, str]] = []
        self._jobs: dict[str, dict[str, Any]] = {}
        # (job_key, call_id) -> (job, call) of calls not finished yet, for retries and copies
        self._records: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]] = {}
        self._started = False
        self._closed = False
        self._lock = threading.RLock()
        self._invoker = None
        self.monitor = monitor_spec.monitor_class(
            self.storage_backend,
            self._on_status,
            self._on_monitor_error,
            wcfg.monitor_interval,
            parse_section(monitor_spec.config_class, wcfg.monitoring, cfg.section(wcfg.monitoring))
            if monitor_spec.config_class
            else None,
        )
        _live.add(self)
        # warm the backend (the localhost pool) while the user prepares the first job
        threading.Thread(target=self._start_compute, name="wren-start", daemon=True).start()
        logger.info(
            "executor %s: backend %s, storage %s, max_workers %d",
            self.executor_id, self.backend, self.storage_backend.name, self.max_workers,
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def _start_compute(self) -> None:
        with self._lock:
            if self._started:
                return
            self.compute.start()
            if not self.compute.manages_concurrency:
                from wren.invoker import Invoker

                self._invoker = Invoker(self.compute, self.max_workers, self)  # type: ignore[assignment]
            self._started = True

    def __enter__(self) -> FunctionExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<wren.FunctionExecutor {self.executor_id} backend={self.backend!r} storage={self.storage_backend.name!r}>"

    def close(self, clean: bool | None = None) -> None:
        """Stop monitoring, release the backend and (unless asked not to) clean temporary data."""
        if self._closed:
            return
        self._closed = True
        try:
            self._save_logs()
        except OSError as exc:  # pragma: no cover - a full disk must not break closing
            logger.warning("could not save the calls' logs: %s", exc)
        self.monitor.stop()
        if self._invoker is not None:
            self._invoker.stop()
        owner_close = getattr(self.compute, "close_owner", None)
        if callable(owner_close):
            owner_close(self.executor_id)
        self.compute.close()
        if clean if clean is not None else self._clean_on_exit:
            try:
                self.clean()
            except Exception as exc:  # pragma: no cover - best effort at exit
                logger.warning("could not clean %s: %s", self.prefix, exc)

    # -- the channel backends report through ----------------------------------------------------
    def deliver(self, status: dict[str, Any]) -> None:
        f = self._by_key.get((status["job_key"], status["call_id"]))
        if f is not None:
            self._on_status(f, status)

    def running(self, job_key: str, call_id: str) -> None:
        f = self._by_key.get((job_key, call_id))
        if f is not None:
            f._mark(RUNNING)
            f.stats.setdefault("host_running_tstamp", time.time())

    def failed(self, job_key: str, call_id: str, error: BaseException) -> None:
        f = self._by_key.get((job_key, call_id))
        if f is None or f.ready:
            return
        kind = error_kind(error)
        if self._attempt_failed(f, kind, type(error), str(error)):
            return
        if f._set_exception(error, kind):
            self._finished(f)

    def _on_status(self, future: ResponseFuture, status: dict[str, Any]) -> None:
        if future.ready:
            return  # another attempt won already: exactly one result per call
        if not status.get("success") and self._attempt_failed(
            future, status.get("error_kind") or "user", status.get("exc_type") or "", status.get("exc_message", "")
        ):
            return
        if future._set_status(status):
            self._finished(future)

    def _on_monitor_error(self, future: ResponseFuture, exc: BaseException) -> None:
        if self._attempt_failed(future, "system", type(exc), str(exc)):
            return
        if future._set_exception(exc):
            self._finished(future)

    # -- retries and speculative copies ---------------------------------------------------------
    def _retryable(self, kind: str, exc_type: Any) -> bool:
        if kind in ("worker_died", "timeout", "system"):
            return True
        names = set(self.config.wren.retry_on)
        if not names:
            return False
        qual = exc_type if isinstance(exc_type, str) else f"{exc_type.__module__}.{exc_type.__qualname__}"
        return qual in names or qual.rsplit(".", 1)[-1] in names or qual.replace("builtins.", "") in names

    def _attempt_failed(self, future: ResponseFuture, kind: str, exc_type: Any, message: str) -> bool:
        """One attempt of a call failed. Returns True when the call goes on (another attempt
        is running, or a retry was launched), False when the failure is final."""
        with self._lock:
            future._inflight = max(0, getattr(future, "_inflight", 1) - 1)
            reasons = future.stats.setdefault("attempt_errors", [])
            reasons.append(f"attempt {len(reasons) + 1}: {kind}: {message[:200]}")
            if future._inflight > 0:
                return True  # a speculative copy may still succeed
            retries_used = future.stats.get("retries", 0)
            if retries_used >= self.config.wren.retries or not self._retryable(kind, exc_type):
                return False
            record = self._records.get(future.key)
            if record is None or self._closed:
                return False
            future.stats["retries"] = retries_used + 1
        # back off, so a platform or storage outage of a few seconds does not use up every retry
        delay = min(30.0, 0.5 * 2 ** retries_used) * random.uniform(0.8, 1.2)
        logger.info("retrying call %s of %s after %s in %.1f s (retry %d of %d)", future.call_id, future.job_key,
                    kind, delay, retries_used + 1, self.config.wren.retries)
        timer = threading.Timer(delay, self._launch_attempt, (future, record))
        timer.daemon = True
        timer.start()
        return True

    def _launch_attempt(self, future: ResponseFuture, record: tuple[dict[str, Any], dict[str, Any]]) -> None:
        job, call = record
        with self._lock:
            attempt = future.attempts
            future.attempts += 1
            future._inflight = getattr(future, "_inflight", 0) + 1
        future.stats["host_submit_tstamp"] = time.time()
        future.stats.pop("host_running_tstamp", None)
        new_call = dict(call, attempt=attempt)
        if self._invoker is not None:
            self._invoker.release(future.job_key, future.call_id)
            if not self._direct:
                self.monitor.watch([future])
            self._invoker.submit(job, [new_call])
        else:
            if not self._direct:
                self.monitor.watch([future])
            self.compute.invoke(job, [new_call], self)

    def _speculate(self, fs: list[ResponseFuture]) -> None:
        """Back up stragglers: calls running far longer than their job's median."""
        wcfg = self.config.wren
        if not wcfg.speculation:
            return
        now = time.time()
        by_job: dict[str, list[ResponseFuture]] = {}
        for f in fs:
            by_job.setdefault(f.job_key, []).append(f)
        for job_key, futures in by_job.items():
            done = [f for f in futures if f.success]
            pending = [f for f in futures if not f.ready]
            if not pending or len(done) < wcfg.speculation_quantile * len(futures):
                continue
            durations = sorted(
                f.stats["worker_end_tstamp"] - f.stats["worker_start_tstamp"]
                for f in done if "worker_end_tstamp" in f.stats and "worker_start_tstamp" in f.stats
            )
            if not durations:
                continue
            median = durations[len(durations) // 2]
            limit = max(wcfg.speculation_factor * median, median + 1.0)
            for f in pending:
                started = f.stats.get("host_running_tstamp") or f.stats.get("host_submit_tstamp")
                if started and now - started > limit and not f.stats.get("speculative_copies"):
                    record = self._records.get(f.key)
                    if record is None:
                        continue
                    f.stats["speculative_copies"] = 1
                    logger.info("call %s of %s runs %.1f s (median %.2f s): launching a backup copy",
                                f.call_id, job_key, now - started, median)
                    self._launch_attempt(f, record)

    def _finished(self, future: ResponseFuture) -> None:
        self._records.pop(future.key, None)
        if self._invoker is not None:
            self._invoker.release(future.job_key, future.call_id)
        with self._cond:
            waiters = list(self._waiters)
        for w in waiters:
            w.finished(future)

    # -- building and sending jobs --------------------------------------------------------------
    def _runtime_modules(self) -> Iterable[str] | None:
        if not hasattr(self, "_runtime_meta"):  # asked once per executor: it may cost a request
            self._runtime_meta = self.compute.runtime_metadata(self.config.wren.runtime)
        return self._runtime_meta.get("modules")

    def _submit(
        self,
        func: Callable[..., Any],
        arguments: list[tuple[tuple, dict]],
        kind: str,
        *,
        extra_env: Mapping[str, Any] | None = None,
        runtime_memory: int | None = None,
        timeout: float | None = None,
        include_modules: Sequence[str] | None = None,
        exclude_modules: Sequence[str] | None = None,
        store_results: bool = False,
        objs: list[dict[str, Any]] | None = None,
        binder: jobmod.Binder | None = None,
        internal: bool = False,
    ) -> list[ResponseFuture]:
        if self._closed:
            raise InvalidInputError("this executor is closed; create a new one with wren.function_executor()")
        wcfg = self.config.wren
        timeout = self._check_timeout(timeout)
        if runtime_memory is not None and (not isinstance(runtime_memory, int) or runtime_memory <= 0):
            raise InvalidInputError(f"runtime_memory must be a positive number of MB, got {runtime_memory!r}")
        if extra_env is not None:
            if not isinstance(extra_env, Mapping):
                raise InvalidInputError(f"extra_env must be a dict of variable names to values, got {type(extra_env).__name__}")
            bad = [k for k in extra_env if not isinstance(k, str) or not k or "=" in k]
            if bad:
                raise InvalidInputError(f"extra_env has an invalid variable name {bad[0]!r}")
        binder = binder or jobmod.Binder(func)
        for i, (args, kwargs) in enumerate(arguments):
            binder.check(args, kwargs, f"call {i}")

        # everything below stores or sends: all checks that can be made are made above
        inline, aggregate, ranges = jobmod.pack_calls(
            arguments, int(wcfg.data_limit * 1024 * 1024),
            min(wcfg.inline_data_limit, self.compute.max_payload_bytes // 2), self._secret,
        )
        package, shipped = serialize.package_function(
            func, include_modules, exclude_modules, self._runtime_modules()
        )
        if shipped:
            logger.debug("shipping local modules %s with %s", shipped, getattr(func, "__name__", func))
        func_hash = serialize.content_hash(package)
        func_key = f"{self.prefix}/funcs/{func_hash}.pickle"
        job_id = f"{kind[0].upper()}{next(self._job_counter):03d}"
        job_prefix = f"{self.prefix}/{job_id}"
        job_key = f"{self.executor_id}/{job_id}"
        with self._lock:
            if func_key not in self._uploaded_funcs:
                self.storage_backend.put_object(self.bucket, func_key, serialize.sign(self._secret, package))
                self._uploaded_funcs.add(func_key)
        data_key = None
        if aggregate is not None:
            data_key = f"{job_prefix}/data.pickle"
            self.storage_backend.put_object(self.bucket, data_key, aggregate)

        job = {
            "v": 1,
            "executor_id": self.executor_id,
            "executor_prefix": self.prefix,
            "root_id": self._root_id,
            "root_secret": self._root_secret.hex(),
            "job_id": job_id,
            "job_key": job_key,
            "prefix": job_prefix,
            "bucket": self.bucket,
            "storage": {"name": self.storage_backend.name, "config": self.storage_backend.worker_config()},
            "func_key": func_key,
            "func_name": getattr(func, "__qualname__", repr(func)),
            "secret": self._secret.hex(),
            "data_key": data_key,
            "python": PYTHON_VERSION,
            "wren": __version__,
            "timeout": timeout,
            "runtime_memory": runtime_memory or wcfg.runtime_memory,
            "extra_env": dict(extra_env or {}),
            "store_results": store_results or self._nested or not self._direct,
            "inline_result_limit": wcfg.inline_result_limit,
            "reserved": binder.reserved,
            "config": self._worker_config,
            "total_calls": len(arguments),
            "retries": wcfg.retries,
            "retry_on": list(wcfg.retry_on),
        }
        events = self.monitor.job_events(job)
        if events:
            job["events"] = events
        calls = []
        futures = []
        for i, call_id in enumerate(jobmod.iter_calls(len(arguments))):
            call = {"call_id": call_id, "data": inline[i], "data_range": ranges[i], "obj": objs[i] if objs else None}
            calls.append(call)
            f = ResponseFuture(self.executor_id, job_id, call_id, job_prefix, self.bucket, kind)
            f._executor = self
            f._secret = self._secret
            f.internal = internal
            f.stats["func_data_size_bytes"] = len(inline[i]) if inline[i] is not None else (ranges[i][1] - ranges[i][0] + 1)  # type: ignore[index]
            f.stats["timeout"] = timeout
            f._inflight = 1
            futures.append(f)
            self._records[f.key] = (job, call)
        with self._cond:
            for f in futures:
                self._by_key[f.key] = f
            self.futures.extend(futures)
        self._jobs[job_key] = {
            "job_id": job_id, "kind": kind, "calls": len(calls), "func": job["func_name"],
            "submitted": time.time(), "timeout": timeout, "prefix": job_prefix,
        }
        if not self._direct and not self._nested:
            self._write_journal()
        self._start_compute()
        for f in futures:
            f._mark(INVOKED)
        if not self._direct:
            self.monitor.watch(futures)
        if self.compute.manages_concurrency:
            try:
                self.compute.invoke(job, calls, self)
            except BaseException as exc:
                for call in calls:
                    self.failed(job_key, call["call_id"], exc)
                raise
        else:
            assert self._invoker is not None
            self._invoker.submit(job, calls)
        logger.info("job %s: %d call(s) of %s submitted", job_key, len(calls), job["func_name"])
        return futures

    def _check_timeout(self, timeout: float | None) -> float:
        if timeout is None:
            return float(self.config.wren.runtime_timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidInputError(f"timeout must be a positive number of seconds, got {timeout!r}")
        return float(timeout)

    # -- the public API -------------------------------------------------------------------------
    def call_async(
        self,
        func: Callable[..., Any],
        data: Any = (),
        extra_env: Mapping[str, Any] | None = None,
        runtime_memory: int | None = None,
        timeout: float | None = None,
        include_modules: Sequence[str] | None = None,
        exclude_modules: Sequence[str] | None = None,
    ) -> ResponseFuture:
        """Run ``func`` once with ``data`` (a tuple spreads, a dict spreads as keywords,
        anything else is the one argument; ``()`` calls it without arguments)."""
        jobmod.check_function(func)
        args, kwargs = jobmod.split_item(data)
        return self._submit(
            func, [(args, kwargs)], "async", extra_env=extra_env, runtime_memory=runtime_memory,
            timeout=timeout, include_modules=include_modules, exclude_modules=exclude_modules,
        )[0]

    def map(
        self,
        map_function: Callable[..., Any],
        map_iterdata: Any,
        extra_args: Any = None,
        extra_env: Mapping[str, Any] | None = None,
        runtime_memory: int | None = None,
        timeout: float | None = None,
        chunk_size: int | None = None,
        chunk_n: int | None = None,
        include_modules: Sequence[str] | None = None,
        exclude_modules: Sequence[str] | None = None,
        obj_chunk_size: int | None = None,
        obj_chunk_number: int | None = None,
    ) -> list[ResponseFuture]:
        """Run ``map_function`` once per item of ``map_iterdata``; futures in input order."""
        chunk_size = chunk_size if chunk_size is not None else obj_chunk_size
        chunk_n = chunk_n if chunk_n is not None else obj_chunk_number
        futures, _ = self._map(
            map_function, map_iterdata, extra_args, chunk_size, chunk_n, kind="map",
            extra_env=extra_env, runtime_memory=runtime_memory, timeout=timeout,
            include_modules=include_modules, exclude_modules=exclude_modules,
        )
        return futures

    def _map(
        self,
        func: Callable[..., Any],
        iterdata: Any,
        extra_args: Any,
        chunk_size: int | None,
        chunk_n: int | None,
        kind: str,
        **submit: Any,
    ) -> tuple[list[ResponseFuture], list[list[int]] | None]:
        jobmod.check_function(func)
        binder = jobmod.Binder(func)
        groups = None
        objs = None
        if binder.reserved["obj"]:
            from wren.partitioner import partition

            arguments, objs, groups = partition(self, iterdata, extra_args, chunk_size, chunk_n, func=func)
        else:
            if chunk_size is not None or chunk_n is not None:
                raise InvalidInputError(
                    "chunk_size and chunk_n split stored objects between calls, so they need a "
                    "function with an 'obj' parameter; remove them or add the parameter"
                )
            items = jobmod.normalize_iterdata(iterdata)
            arguments = [jobmod.add_extra_args(*jobmod.split_item(it), extra_args) for it in items]
        if not arguments:
            return [], groups
        return self._submit(func, arguments, kind, objs=objs, binder=binder, **submit), groups

    def map_reduce(
        self,
        map_function: Callable[..., Any],
        map_iterdata: Any,
        reduce_function: Callable[..., Any],
        extra_args: Any = None,
        extra_env: Mapping[str, Any] | None = None,
        map_runtime_memory: int | None = None,
        reduce_runtime_memory: int | None = None,
        timeout: float | None = None,
        chunk_size: int | None = None,
        chunk_n: int | None = None,
        reducer_wait_local: bool = False,
        reducer_one_per_object: bool = False,
        include_modules: Sequence[str] | None = None,
        exclude_modules: Sequence[str] | None = None,
        obj_chunk_size: int | None = None,
        obj_chunk_number: int | None = None,
    ) -> ResponseFuture | list[ResponseFuture]:
        """Map, then reduce: ``reduce_function(results)`` gets the list of map results.

        The reducer is launched at once and waits for the map results on the worker side;
        ``reducer_wait_local=True`` waits on the client first. With
        ``reducer_one_per_object=True`` there is one reducer per object (over its chunks), and a
        list of futures is returned.
        """
        jobmod.check_function(map_function)
        jobmod.check_function(reduce_function)
        rbinder = jobmod.Binder(reduce_function)
        rbinder.check((None,), {}, "the reducer")
        chunk_size = chunk_size if chunk_size is not None else obj_chunk_size
        chunk_n = chunk_n if chunk_n is not None else obj_chunk_number
        if reducer_one_per_object and not jobmod.Binder(map_function).reserved["obj"]:
            raise InvalidInputError(
                "reducer_one_per_object needs a map function with an 'obj' parameter (one reducer "
                "per stored object); remove the option or partition objects"
            )
        common = dict(extra_env=extra_env, timeout=timeout, include_modules=include_modules, exclude_modules=exclude_modules)
        map_futures, groups = self._map(
            map_function, map_iterdata, extra_args, chunk_size, chunk_n, kind="map",
            runtime_memory=map_runtime_memory, store_results=not reducer_wait_local,
            internal=True, **common,
        )
        if not map_futures:
            raise InvalidInputError("map_reduce got no items to map: iterdata is empty")
        if not reducer_one_per_object or groups is None:
            groups = [list(range(len(map_futures)))]
        if reducer_wait_local:
            self.wait(map_futures, show_progressbar=False)
            arguments = [((([map_futures[i].result() for i in g]),), {}) for g in groups]
            reducer = reduce_function
        else:
            refs = [[(f.job_prefix, f.call_id) for f in (map_futures[i] for i in g)] for g in groups]
            arguments = [((r,), {}) for r in refs]
            reducer = _RemoteReducer(reduce_function, map_futures[0].bucket, timeout or self.config.wren.runtime_timeout)
        reduce_futures = self._submit(
            reducer, arguments, "reduce", runtime_memory=reduce_runtime_memory,
            binder=jobmod.Binder(reducer), **common,
        )
        return reduce_futures if reducer_one_per_object else reduce_futures[0]

    # -- waiting --------------------------------------------------------------------------------
    def _select(self, fs: Any) -> list[ResponseFuture]:
        if fs is None:
            return list(self.futures)
        if isinstance(fs, ResponseFuture):
            fs = [fs]
        fs = list(fs)
        bad = [f for f in fs if not isinstance(f, ResponseFuture)]
        if bad:
            raise InvalidInputError(f"fs must hold futures returned by this executor, got {type(bad[0]).__name__}")
        for f in fs:
            if f._executor is None or (f._executor is not self and f._executor._closed):
                self._adopt([f])
        return fs

    def _adopt(self, futures: list[ResponseFuture]) -> None:
        """Take charge of futures made elsewhere (returned by a call, or unpickled)."""
        watch = []
        for f in futures:
            if f._executor is self:
                continue
            secret = derive_secret(self._root_id, self._root_secret, f.executor_id)
            if secret is None:
                raise InvalidInputError(
                    f"future {f.job_key}/{f.call_id} belongs to another executor ({f.executor_id}); "
                    "wait for it with that executor"
                )
            f._executor = self
            f._secret = secret
            with self._cond:
                self._by_key.setdefault(f.key, f)
            if not f.ready:
                watch.append(f)
        if watch:
            # the call that made these returned, so their status is (or will be) in storage
            self.monitor.watch(watch) if not self._direct else self._storage_monitor().watch(watch)

    def _storage_monitor(self) -> Any:
        from wren.monitor import StorageMonitor

        with self._lock:
            mon = getattr(self, "_nested_monitor", None)
            if mon is None:
                mon = StorageMonitor(
                    self.storage_backend, self._on_status, self._on_monitor_error, self.config.wren.monitor_interval
                )
                self._nested_monitor = mon
            return mon

    def _resolve_nested(self, value: Any, throw_except: bool, timeout: float | None) -> Any:
        single = not isinstance(value, (list, tuple))
        fs = [value] if single else list(value)
        self._adopt(fs)
        results = self.get_result(fs, throw_except=throw_except, timeout=timeout, show_progressbar=False)
        return results[0] if single else results

    def wait(
        self,
        fs: Any = None,
        return_when: str = ALL_COMPLETED,
        throw_except: bool = True,
        timeout: float | None = None,
        show_progressbar: bool = True,
    ) -> tuple[list[ResponseFuture], list[ResponseFuture]]:
        """Wait for calls; returns ``(done, not_done)``.

        ``return_when``: ``wren.ALL_COMPLETED`` (default), ``wren.ANY_COMPLETED`` or
        ``wren.ALWAYS`` (return at once). With ``throw_except=True`` the first failed call's
        exception is raised as soon as it is known. ``timeout`` (seconds) bounds the wait.
        """
        if return_when not in (ALL_COMPLETED, ANY_COMPLETED, ALWAYS):
            raise InvalidInputError(
                f"return_when must be wren.ALL_COMPLETED, wren.ANY_COMPLETED or wren.ALWAYS, got {return_when!r}"
            )
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise InvalidInputError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        fs = self._select(fs)
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = _Waiter(fs, return_when, throw_except)
        with self._cond:
            self._waiters.add(waiter)
        for f in fs:  # futures that finished before the waiter was registered
            if f.ready:
                waiter.finished(f)
        bar = _progress_bar(len(fs), show_progressbar and self.config.wren.progressbar)
        last_report = time.monotonic()
        try:
            while True:
                if bar is not None:
                    bar.update(waiter.n_ready, waiter.n_failed, sum(1 for f in fs if f.status == RUNNING))
                if waiter.failed is not None:
                    waiter.failed.result(throw_except=True)
                if return_when == ALWAYS or waiter.satisfied():
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                self._expire_overdue(fs)
                self._speculate(fs)
                if now - last_report > 30:
                    last_report = now
                    self._report_waiting(fs)
                wait_for = 0.5 if deadline is None else max(0.0, min(0.5, deadline - now))
                waiter.event.wait(wait_for)
        finally:
            with self._cond:
                self._waiters.discard(waiter)
            if bar is not None:
                bar.close()
        done = [f for f in fs if f.ready]
        not_done = [f for f in fs if not f.ready]
        return done, not_done

    def _expire_overdue(self, fs: list[ResponseFuture]) -> None:
        """A call silent long after its timeout lost its worker: fail it instead of hanging."""
        now = time.time()
        for f in fs:
            if f.ready:
                continue
            start = f.stats.get("host_running_tstamp") or f.stats.get("host_submit_tstamp")
            limit = f.stats.get("timeout")
            if start and limit:
                grace = max(30.0, 0.1 * limit)
                if now - start > limit + grace:
                    self.failed(
                        f.job_key, f.call_id,
                        CallTimeoutError(
                            f"call {f.call_id} of job {f.job_key} sent no result {limit + grace:.0f} s after it "
                            f"was started (timeout {limit:.0f} s): its worker was probably lost"
                        ),
                    )

    def _report_waiting(self, fs: list[ResponseFuture]) -> None:
        pending = [f for f in fs if not f.ready]
        by_job: dict[str, list[str]] = {}
        for f in pending:
            by_job.setdefault(f.job_key, []).append(f.call_id)
        parts = [f"{job}: {len(c)} call(s) e.g. {', '.join(c[:5])}" for job, c in by_job.items()]
        queued = self._invoker.pending if self._invoker is not None else 0
        logger.warning(
            "still waiting for %d call(s) (%s); %d not yet invoked (max_workers=%d)",
            len(pending), "; ".join(parts), queued, self.max_workers,
        )

    def get_result(
        self,
        fs: Any = None,
        throw_except: bool = True,
        timeout: float | None = None,
        show_progressbar: bool = True,
    ) -> Any:
        """Wait for calls and return their results in order.

        With no ``fs``: every future of this executor whose result was not returned yet, in
        submission order (a single value when that is one ``call_async`` future). A failed call
        re-raises its exception, or gives ``None`` with ``throw_except=False``.
        """
        single = isinstance(fs, ResponseFuture)
        if fs is None:
            selected = [f for f in self.futures if not f._read and not f.internal]
            single = len(selected) == 1 and selected[0].kind == "async"
        else:
            selected = self._select(fs)
        if not selected:
            return None if single else []
        done, not_done = self.wait(selected, ALL_COMPLETED, throw_except, timeout, show_progressbar)
        if not_done:
            raise WaitTimeoutError(
                f"{len(not_done)} of {len(selected)} call(s) not finished after {timeout} s; call "
                "get_result() again to keep waiting"
            )
        need_fetch = [f for f in selected if f.success and not f._decoded and (f._status or {}).get("result_key")]
        if len(need_fetch) > 1:
            with concurrent.futures.ThreadPoolExecutor(min(32, len(need_fetch))) as pool:
                list(pool.map(lambda f: f._decode(), need_fetch))
        results = []
        for f in selected:
            results.append(f.result(throw_except=throw_except))
            f._read = True
        return results[0] if single else results

    # -- cleaning, plots ------------------------------------------------------------------------
    def _save_logs(self) -> None:
        """Keep what finished calls printed under ~/.wren/logs for ``wren logs``."""
        from wren import journal

        by_job: dict[str, list[ResponseFuture]] = {}
        for f in self.futures:
            if f.ready:
                by_job.setdefault(f.job_id, []).append(f)
        for job_id, fs in by_job.items():
            journal.save_logs(fs[0].executor_id, job_id, [(f.call_id, f.logs()) for f in fs])

    def _write_journal(self) -> None:
        from wren import journal

        journal.write({
            "executor_id": self.executor_id, "prefix": self.prefix, "bucket": self.bucket,
            "storage": self.storage_backend.name, "backend": self.backend, "secret": self._secret.hex(),
            "pid": os.getpid(), "created": time.time(),
            "jobs": {m["job_id"]: {"calls": m["calls"], "kind": m["kind"]} for m in self._jobs.values()},
        })

    def attach(self, executor_id: str) -> list[ResponseFuture]:
        """Reattach to the jobs of an executor whose client is gone (crashed, killed) and
        return their futures, to wait for and read as usual (``get_result(futures)``).

        Works for backends whose calls outlive the client (every cloud backend); the record
        needed is kept on the machine that submitted the jobs.
        """
        from wren import journal

        rec = journal.read(executor_id)
        if rec["storage"] != self.storage_backend.name or rec["bucket"] != self.bucket:
            raise InvalidInputError(
                f"executor {executor_id} kept its data in storage {rec['storage']!r} bucket {rec['bucket']!r}; "
                f"attach from an executor configured with that storage (this one uses "
                f"{self.storage_backend.name!r} bucket {self.bucket!r})"
            )
        secret = bytes.fromhex(rec["secret"])
        futures = []
        for job_id, meta in sorted(rec["jobs"].items()):
            for call_id in jobmod.iter_calls(meta["calls"]):
                f = ResponseFuture(executor_id, job_id, call_id, f"{rec['prefix']}/{job_id}", rec["bucket"], meta["kind"])
                f._executor = self
                f._secret = secret
                f._mark(INVOKED)
                futures.append(f)
        with self._cond:
            for f in futures:
                self._by_key[f.key] = f
            self.futures.extend(futures)
        self._attached.append((executor_id, rec["prefix"]))
        (self._storage_monitor() if self._direct else self.monitor).watch(futures)
        return futures

    def clean(self, fs: Any = None, clean_cloudobjects: bool = True) -> int:
        """Delete temporary data: the given futures' jobs, or everything of this executor (and
        of executors it reattached to). Returns the number of objects removed."""
        from wren import journal

        if fs is None:
            prefixes = [self.prefix + "/"] + [p + "/" for _, p in self._attached]
        else:
            prefixes = sorted({f.job_prefix + "/" for f in self._select(fs)})
        removed = 0
        for prefix in prefixes:
            try:
                removed += self.storage_backend.delete_prefix(self.bucket, prefix)
            except StorageNoSuchBucketError:
                break  # nothing was ever stored
        if fs is None:
            self._uploaded_funcs.clear()
            for eid in [self.executor_id] + [e for e, _ in self._attached]:
                journal.remove(eid)
        logger.debug("cleaned %d object(s) under %s", removed, prefixes)
        return removed

    def plot(self, fs: Any = None, dst: str | None = None) -> list[str]:
        """Draw the execution timeline and the concurrency histogram of ``fs`` (default: all)
        to ``<dst>_timeline.png`` and ``<dst>_histogram.png``. Needs matplotlib."""
        from wren.plots import plot_futures

        fs = [f for f in self._select(fs) if f.ready]
        if not fs:
            raise InvalidInputError("no finished calls to plot: wait for some calls first")
        return plot_futures(fs, dst or f"wren-{self.executor_id}")

    def job_summary(self) -> list[dict[str, Any]]:
        """Per job: calls, successes, failures and phase times (seconds)."""
        rows = []
        for job_key, meta in self._jobs.items():
            fs = [f for f in self.futures if f.job_key == job_key]
            ok = [f for f in fs if f.success]
            err = [f for f in fs if f.error]
            exec_times = [
                f.stats["worker_func_end_tstamp"] - f.stats["worker_func_start_tstamp"]
                for f in fs if "worker_func_end_tstamp" in f.stats and "worker_func_start_tstamp" in f.stats
            ]
            ends = [f.stats.get("host_status_done_tstamp", 0) for f in fs if f.ready]
            row = {
                "job": job_key, "function": meta["func"], "kind": meta["kind"], "calls": len(fs),
                "success": len(ok), "error": len(err), "pending": len(fs) - len(ok) - len(err),
                "total_time": (max(ends) - meta["submitted"]) if ends else None,
                "exec_time_sum": sum(exec_times),
                "exec_time_mean": (sum(exec_times) / len(exec_times)) if exec_times else None,
            }
            price = self.compute.price_per_gb_second
            if price is not None:
                mem_gb = (self.config.wren.runtime_memory or 256) / 1024
                row["estimated_cost"] = sum(exec_times) * mem_gb * price
            rows.append(row)
        return rows


def _exception_names(retry_on: Any) -> list[str]:
    if isinstance(retry_on, (str, type)):
        retry_on = [retry_on]
    names = []
    for item in retry_on:
        if isinstance(item, type) and issubclass(item, BaseException):
            names.append(f"{item.__module__}.{item.__qualname__}".replace("builtins.", ""))
        elif isinstance(item, str) and item:
            names.append(item)
        else:
            raise InvalidInputError(
                f"retry_on takes exception classes or their names, e.g. retry_on=[ConnectionError], got {item!r}"
            )
    return names


class _Waiter:
    """Counts the finished futures of one wait() call; O(1) per finished call."""

    def __init__(self, fs: list[ResponseFuture], return_when: str, throw_except: bool):
        self.pending = {id(f) for f in fs}
        self.total = len(self.pending)
        self.return_when = return_when
        self.throw_except = throw_except
        self.n_ready = 0
        self.n_failed = 0
        self.failed: ResponseFuture | None = None
        self.event = threading.Event()
        self._lock = threading.Lock()

    def finished(self, f: ResponseFuture) -> None:
        with self._lock:
            if id(f) not in self.pending:
                return
            self.pending.discard(id(f))
            self.n_ready += 1
            if f.error:
                self.n_failed += 1
                if self.throw_except and self.failed is None:
                    self.failed = f
        if self.satisfied() or self.failed is not None:
            self.event.set()

    def satisfied(self) -> bool:
        if not self.pending:
            return True
        return self.return_when == ANY_COMPLETED and self.n_ready > 0


class _RemoteReducer:
    """The reducer call: waits (on the worker) for the map results, then reduces them."""

    def __init__(self, reduce_function: Callable[..., Any], bucket: str, timeout: float):
        self.reduce_function = reduce_function
        self.bucket = bucket
        self.timeout = timeout
        self.binder = jobmod.Binder(reduce_function)
        functools_update(self, reduce_function)

    def __call__(self, refs: list[tuple[str, str]], storage: Any = None, id: int = 0) -> Any:  # noqa: A002
        from wren.worker.collect import collect_results

        results = collect_results(storage.storage_backend, self.bucket, refs, self.timeout)
        kwargs = {}
        if self.binder.reserved["storage"]:
            kwargs["storage"] = storage
        if self.binder.reserved["id"]:
            kwargs["id"] = id
        return self.reduce_function(results, **kwargs)


def functools_update(wrapper: Any, wrapped: Any) -> None:
    for attr in ("__name__", "__qualname__", "__doc__"):
        try:
            setattr(wrapper, attr, getattr(wrapped, attr))
        except (AttributeError, TypeError):
            pass


class _Bar:
    def __init__(self, total: int):
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="call", leave=False, dynamic_ncols=True, file=sys.stderr)
        self._n = 0

    def update(self, done: int, failed: int, running: int) -> None:
        if done != self._n:
            self._bar.update(done - self._n)
            self._n = done
        self._bar.set_postfix_str(f"running={running} failed={failed}", refresh=False)

    def close(self) -> None:
        self._bar.close()


def _progress_bar(total: int, wanted: bool) -> _Bar | None:
    if not wanted or total < 2 or os.environ.get("WREN_WORKER") or worker_context.current() is not None:
        return None
    force = os.environ.get("WREN_PROGRESSBAR", "").lower() in ("1", "true", "yes")
    if not force and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return None
    try:
        return _Bar(total)
    except Exception:  # pragma: no cover
        return None


@atexit.register
def _close_all() -> None:
    for ex in list(_live):
        try:
            ex.close()
        except Exception:  # pragma: no cover
            pass


def function_executor(
    backend: str | None = None,
    storage: str | None = None,
    config: Mapping[str, Any] | None = None,
    runtime: str | None = None,
    runtime_memory: int | None = None,
    log_level: str | None = None,
    max_workers: int | None = None,
    monitoring: str | None = None,
    **kwargs: Any,
) -> FunctionExecutor:
    """Create an executor. With no arguments and no config: localhost compute, local storage.

    ``backend``: ``localhost``, ``ibm_cf``, ``openwhisk``, ``knative``, ``docker`` or any
    installed plugin. ``storage``: ``localhost``, ``ibm_cos``... ``config``: a dict of sections
    (see :mod:`wren.config`). Other keyword arguments set keys of the ``wren`` section
    (``clean_on_exit=False``, ``runtime_timeout=60``...).
    """
    return FunctionExecutor(
        backend=backend, storage=storage, config=config, runtime=runtime,
        runtime_memory=runtime_memory, log_level=log_level, max_workers=max_workers,
        monitoring=monitoring, **kwargs,
    )


def local_executor(**kwargs: Any) -> FunctionExecutor:
    """``function_executor(backend='localhost', ...)``."""
    return function_executor(backend="localhost", **kwargs)


def ibm_cf_executor(**kwargs: Any) -> FunctionExecutor:
    """``function_executor(backend='ibm_cf', ...)`` (needs wren-backend-ibmcf)."""
    return function_executor(backend="ibm_cf", **kwargs)


def openwhisk_executor(**kwargs: Any) -> FunctionExecutor:
    """``function_executor(backend='openwhisk', ...)`` (needs wren-backend-openwhisk)."""
    return function_executor(backend="openwhisk", **kwargs)


def knative_executor(**kwargs: Any) -> FunctionExecutor:
    """``function_executor(backend='knative', ...)`` (needs wren-backend-knative)."""
    return function_executor(backend="knative", **kwargs)


def code_engine_executor(**kwargs: Any) -> FunctionExecutor:
    """``function_executor(backend='code_engine', ...)`` (needs wren-backend-codeengine)."""
    return function_executor(backend="code_engine", **kwargs)


def docker_executor(**kwargs: Any) -> FunctionExecutor:
    """``function_executor(backend='docker', ...)`` (needs wren-backend-docker)."""
    return function_executor(backend="docker", **kwargs)


__all__ = [
    "ALL_COMPLETED", "ALWAYS", "ANY_COMPLETED", "FunctionExecutor", "Storage", "contains_futures",
    "code_engine_executor", "docker_executor", "function_executor", "ibm_cf_executor", "knative_executor",
    "local_executor", "openwhisk_executor",
]
