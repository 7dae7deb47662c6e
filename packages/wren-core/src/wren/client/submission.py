"""Submission: checking a user's call and packing it into a job.

Everything that can be checked on the client is checked here before anything is stored or
sent: options, timeouts, argument binding against the signature, data limits. Then the
function is stored (once per executor, content-addressed and signed), large call data is
stored as one object read by byte range, and the :class:`~wren.records.Job` and
:class:`~wren.records.Call` records and the calls' futures are made.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import threading
import time
import warnings
import uuid
from typing import Any
from collections.abc import Callable, Iterable, Mapping, Sequence

from wren import job as jobmod
from wren import keys, serialize
from wren.client import chaining, packages
from wren.config import Config
from wren.errors import InvalidInputError
from wren.client.lease import Lease
from wren.future import ResponseFuture
from wren.records import Call, Job

logger = logging.getLogger("wren.executor")

_counter = itertools.count()


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who an executor is: its id, storage prefix and signing keys.

    A root executor has a random key; an executor created inside a call (nested) derives its
    key from its root's (:func:`wren.serialize.derive_secret`), so the root client can verify
    what the nested one stored without any key passing through storage.
    """

    executor_id: str
    prefix: str
    secret: bytes = dataclasses.field(repr=False)
    root_id: str
    root_secret: bytes = dataclasses.field(repr=False)
    nested: bool = False

    @classmethod
    def new_root(cls) -> Identity:
        executor_id = f"{uuid.uuid4().hex[:8]}-{next(_counter)}"
        secret = os.urandom(32)
        return cls(executor_id, keys.executor_prefix(executor_id), secret, executor_id, secret)

    @classmethod
    def nested_in(cls, ctx: dict[str, Any]) -> Identity:
        """The identity of the ``n``-th executor created by the call described by ``ctx``."""
        ctx.setdefault("executors", [])
        n = len(ctx["executors"])
        tag = f"{ctx['job_id']}-{ctx['call_id']}-{n}"
        executor_id = f"{ctx['executor_id']}.{tag}"
        root_id = ctx["root_id"]
        root_secret = bytes.fromhex(ctx["root_secret"])
        secret = serialize.derive_secret(root_id, root_secret, executor_id)
        assert secret is not None
        return cls(executor_id, f"{ctx['executor_prefix']}/nested/{tag}", secret, root_id, root_secret, True)

    def key_of(self, executor_id: str) -> bytes | None:
        """The key of ``executor_id`` if it is this executor or nested under its root."""
        return serialize.derive_secret(self.root_id, self.root_secret, executor_id)


def worker_sections(cfg: Config, registry: Any, known: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """The config workers get (nested executors inherit it; a remote invoker builds its backend
    from it): every section but those of the compute backends and monitors not in use. Storage
    sections all travel (partitioned data may live in another storage)."""
    wcfg = cfg.wren
    unused = (set(known["compute"]) | set(registry.provided("compute"))) - {wcfg.backend, "localhost"}
    unused |= (set(known["monitor"]) | set(registry.provided("monitor"))) - {wcfg.monitoring}
    sections = {name: section for name, section in cfg.to_dict().items() if name not in unused}
    sections.setdefault("wren", {})["backend"] = wcfg.backend
    return sections


#: The longest timeout a call may ask for: 30 days (no platform runs a call longer).
MAX_TIMEOUT = 30 * 24 * 3600.0


def check_timeout(timeout: Any, default: float) -> float:
    """A call's timeout in seconds: ``None`` is the configured default."""
    if timeout is None:
        timeout = default
    if (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout) or timeout <= 0 or timeout > MAX_TIMEOUT
    ):
        raise InvalidInputError(
            f"timeout must be a positive number of seconds up to {MAX_TIMEOUT:.0f} (30 days), got {timeout!r}"
        )
    return float(timeout)


def check_options(runtime_memory: Any, extra_env: Any) -> None:
    if runtime_memory is not None and (
        isinstance(runtime_memory, bool) or not isinstance(runtime_memory, int) or runtime_memory <= 0
    ):
        raise InvalidInputError(f"runtime_memory must be a positive number of MB, got {runtime_memory!r}")
    if extra_env is not None:
        if not isinstance(extra_env, Mapping):
            raise InvalidInputError(f"extra_env must be a dict of variable names to values, got {type(extra_env).__name__}")
        bad = [k for k in extra_env if not isinstance(k, str) or not k or "=" in k or "\0" in k]
        if bad:
            raise InvalidInputError(f"extra_env has an invalid variable name {bad[0]!r}")
        values = [k for k, v in extra_env.items() if not isinstance(v, (str, int, float)) or isinstance(v, bool)
                  or "\0" in str(v)]
        if values:
            raise InvalidInputError(
                f"extra_env[{values[0]!r}] is {extra_env[values[0]]!r}: values must be strings (or numbers); "
                "leave the variable out instead of passing None"
            )


class Submitter:
    """Checks and packs the jobs of one executor. Thread-safe."""

    def __init__(
        self,
        config: Config,
        identity: Identity,
        storage_backend: Any,
        compute: Any,
        worker_config: dict[str, Any],
        store_results: bool,
    ):
        self.config = config
        self.identity = identity
        self.storage_backend = storage_backend
        self.bucket = storage_backend.default_bucket
        self.compute = compute
        self.worker_config = worker_config
        self.store_results = store_results  # workers must write statuses (no direct channel)
        self._job_counter = itertools.count()
        self._uploaded: set[str] = set()
        self._signed: dict[str, bytes] = {}  # func_key -> the signed function
        self._packages = packages.PackageCache()
        #: held from the first object stored until the executor closes (``wren clean`` spares it)
        self.lease = Lease(storage_backend, self.bucket, identity.prefix)
        self._lock = threading.Lock()
        self._runtime_meta: dict[str, Any] | None = None

    def forget_uploads(self) -> None:
        """The executor's data was cleaned: store functions again when next used."""
        with self._lock:
            self._uploaded.clear()

    def _runtime_modules(self) -> Iterable[str] | None:
        if self._runtime_meta is None:  # asked once per executor: it may cost a request
            self._runtime_meta = self.compute.runtime_metadata(self.config.wren.runtime)
        return self._runtime_meta.get("modules")

    # -- the calls' arguments -------------------------------------------------------------------
    def map_arguments(
        self, func: Callable[..., Any], iterdata: Any, extra_args: Any,
        chunking: tuple[int | None, int | None, str | None], binder: jobmod.Binder,
        wait: Callable[[list[ResponseFuture]], Any],
    ) -> tuple[list[jobmod.CallArgs], list[dict[str, Any]] | None, list[list[int]] | None, bool]:
        """Each call's ``(args, kwargs)``, the object partitions of a function with an ``obj``
        parameter, per object the indices of its calls, and whether the calls' arguments hold
        futures the worker resolves (chaining; ``wait(futures)`` waits on the client where
        results do not reach storage)."""
        chunk_size, chunk_n, newline = chunking
        if binder.data_param:
            from wren.partitioner import partition

            arguments, objs, groups = partition(self, iterdata, extra_args, chunk_size, chunk_n, func=func,
                                                newline=newline)
            return arguments, objs, groups, False
        if chunk_size is not None or chunk_n is not None:
            raise InvalidInputError(
                "chunk_size and chunk_n (obj_chunk_size, obj_chunk_number) split stored objects between "
                "calls, so they need a function with an 'obj' parameter; remove them or add the parameter"
            )
        items = jobmod.normalize_iterdata(iterdata)
        found = chaining.futures_in(items)
        resolve = False
        if found:
            items, resolve = chaining.replace_futures(items, found, self.store_results, wait,
                                                      self.identity.executor_id)
        return [jobmod.add_extra_args(*jobmod.split_item(it), extra_args) for it in items], None, None, resolve

    def call_arguments(self, data: Any, wait: Callable[[list[ResponseFuture]], Any]) -> tuple[list[jobmod.CallArgs], bool]:
        """The one call of ``call_async(func, data)`` and whether the worker resolves futures."""
        items, resolve = [data], False
        found = chaining.futures_in(items)
        if found:
            items, resolve = chaining.replace_futures(items, found, self.store_results, wait,
                                                      self.identity.executor_id)
        return [jobmod.split_item(items[0])], resolve

    # -- packing --------------------------------------------------------------------------------
    def pack(
        self,
        func: Callable[..., Any],
        arguments: list[jobmod.CallArgs],
        kind: str,
        *,
        extra_env: Mapping[str, Any] | None = None,
        runtime_memory: int | None = None,
        timeout: float | None = None,
        include_modules: Sequence[str] | None = (),
        exclude_modules: Sequence[str] | None = None,
        store_results: bool = False,
        resolve_futures: bool = False,
        objs: list[dict[str, Any]] | None = None,
        binder: jobmod.Binder | None = None,
        internal: bool = False,
    ) -> tuple[Job, list[Call], list[ResponseFuture]]:
        """Check every call, store the function and large data, and make the job's records
        and futures. Nothing is stored before every check has passed."""
        wcfg = self.config.wren
        timeout = check_timeout(timeout, wcfg.runtime_timeout)
        check_options(runtime_memory, extra_env)
        binder = binder or jobmod.Binder.of(func)
        arguments = [binder.place_reserved(*binder.bind_var(args, kwargs, f"call {i}"))
                     for i, (args, kwargs) in enumerate(arguments)]
        for i, (args, kwargs) in enumerate(arguments):
            binder.check(args, kwargs, f"call {i}")
        ident = self.identity
        job_id = f"{kind[0].upper()}{next(self._job_counter):03d}"
        job_prefix = f"{ident.prefix}/{job_id}"
        data_key = keys.data_key(job_prefix)
        call_ids = keys.call_ids(len(arguments))
        inline, aggregate, ranges = jobmod.pack_calls(
            arguments, int(wcfg.data_limit * 1024 * 1024),
            min(wcfg.inline_data_limit, self.compute.max_payload_bytes // 2), ident.secret,
            lambda i: keys.data_place(data_key, call_ids[i]),
        )
        package, shipped = self._packages.package(
            func, packages.options_key(include_modules, exclude_modules),
            lambda: serialize.package_function(func, include_modules, exclude_modules, self._runtime_modules()))
        if shipped:
            logger.debug("shipping local modules %s with %s", shipped, jobmod.func_name(func))
        warn_if_large(func, len(package), wcfg.func_size_warning)

        # everything below stores: all checks that can be made are made above
        func_key = keys.func_key(ident.prefix, serialize.content_hash(package))
        signed = self._signed.get(func_key)
        if signed is None:
            signed = serialize.sign(ident.secret, package, func_key)
            self._signed[func_key] = signed  # the last few functions: call_async in a loop
            while len(self._signed) > 8:
                self._signed.pop(next(iter(self._signed)))
        if not ident.nested:  # a nested executor's data lives under its root's prefix
            self.lease.hold()
        with self._lock:
            if func_key not in self._uploaded:
                self.storage_backend.put_object(self.bucket, func_key, signed)
                self._uploaded.add(func_key)
        if aggregate is not None:
            self.storage_backend.put_object(self.bucket, data_key, aggregate)

        job = Job(
            executor_id=ident.executor_id,
            job_id=job_id,
            job_key=f"{ident.executor_id}/{job_id}",
            prefix=job_prefix,
            bucket=self.bucket,
            storage={"name": self.storage_backend.name, "config": self.storage_backend.worker_config()},
            func_key=func_key,
            data_key=data_key if aggregate is not None else None,
            func_name=jobmod.func_name(func),
            secret=ident.secret.hex(),
            executor_prefix=ident.prefix,
            root_id=ident.root_id,
            root_secret=ident.root_secret.hex(),
            timeout=timeout,
            runtime_memory=runtime_memory or wcfg.runtime_memory,
            extra_env=dict(extra_env or {}),
            store_results=store_results or ident.nested or self.store_results,
            inline_result_limit=wcfg.inline_result_limit,
            reserved=binder.reserved,
            config=self.worker_config,
            total_calls=len(arguments),
            retries=wcfg.retries,
            retry_on=list(wcfg.retry_on),
            resolve_futures=resolve_futures,
            func_package=signed,
        )
        calls = []
        futures = []
        created = time.time()
        for i, call_id in enumerate(call_ids):
            call = Call(call_id, data=inline[i], data_range=ranges[i], obj=objs[i] if objs else None)
            calls.append(call)
            f = ResponseFuture(ident.executor_id, job_id, call_id, job_prefix, self.bucket, kind)
            f._secret = ident.secret
            f.internal = internal
            data, span = inline[i], ranges[i]
            f.stats["func_data_size_bytes"] = len(data) if data is not None else (span[1] - span[0] + 1 if span else 0)
            f.stats["timeout"] = timeout
            f.stats["host_job_create_tstamp"] = created
            f.stats["func_pickle_size_bytes"] = len(package)
            f._inflight = 1
            futures.append(f)
        return job, calls, futures


class RemoteReducer:
    """The reducer call of ``map_reduce``: waits (on the worker) for the map results, then
    reduces them."""

    def __init__(self, reduce_function: Callable[..., Any], bucket: str, timeout: float):
        self.reduce_function = reduce_function
        self.wren_wrapped = reduce_function  # its local modules are shipped (wren.serialize)
        self.bucket = bucket
        self.timeout = timeout
        self.binder = jobmod.Binder(reduce_function)
        for attr in ("__name__", "__qualname__", "__doc__"):
            try:
                setattr(self, attr, getattr(reduce_function, attr))
            except (AttributeError, TypeError):
                pass

    def __call__(self, refs: list[tuple[str, str]], *extra: Any, storage: Any = None, id: int = 0,  # noqa: A002
                 **extra_kwargs: Any) -> Any:
        from wren.worker.collect import collect_results

        results = collect_results(storage.storage_backend, self.bucket, refs, self.timeout)
        kwargs: dict[str, Any] = dict(extra_kwargs)  # extra_args_reduce
        if self.binder.reserved["storage"]:
            kwargs["storage"] = storage
        if self.binder.reserved["id"]:
            kwargs["id"] = id
        return self.reduce_function(results, *extra, **kwargs)


def warn_if_large(func: Any, size: int, limit_mb: float) -> None:
    """Warn (before anything is sent) when the pickled function is over ``limit_mb`` MB: it
    travels to storage once per executor and is loaded by every worker."""
    if size <= limit_mb * 1024 * 1024:
        return
    name = jobmod.func_name(func)
    warnings.warn(
        f"the function {name!r} pickles to {size / 2**20:.1f} MiB (its closure and the globals "
        "it uses included), sent to storage and loaded by every worker: put large data in storage "
        "once (obj = wren.Storage().put_cloudobject(data)), pass obj and read it in the function "
        "with storage.get_cloudobject(obj) (this warning starts at wren.func_size_warning = "
        f"{limit_mb} MiB)",
        LargeFunctionWarning, stacklevel=_user_stacklevel(),
    )


def _user_stacklevel() -> int:
    """The stack level of the first caller outside wren (so a warning points at the user's line)."""
    import sys

    wren_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(wren_dir + os.sep):
        frame, level = frame.f_back, level + 1
    return level


class LargeFunctionWarning(UserWarning):
    """The function to run pickles to more than ``wren.func_size_warning`` MB."""
