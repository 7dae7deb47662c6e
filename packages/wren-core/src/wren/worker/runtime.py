"""The worker runtime: the one piece of code that runs every call, whatever the backend.

``WorkerRuntime.run(job, call)`` fetches (and verifies) the function and the call's data, binds
the reserved parameters, runs the function with ``extra_env`` and captured stdout/stderr, and
produces the call's status record, which it also writes to storage when the job asks for it.
Backends deliver a :class:`wren.records.Job` and its :class:`wren.records.Call` records (or
their wire form) to it: the localhost pool through a pipe,
containers through :mod:`wren.worker.__main__`.
"""
from __future__ import annotations

import functools
import io
import os
import pickle
import sys
import threading
import time
from collections import OrderedDict
from typing import Any
from collections.abc import Callable

from wren import serialize
from wren.errors import (
    SerializationError,
    StorageError,
    VersionMismatchError,
    WorkerDiedError,
)
from wren.keys import data_place, result_key, status_key
from wren.future import contains_futures
from wren.records import Call, Job
from wren.version import PYTHON_VERSION, __version__
from wren.worker import context, tracebacks

def exception_payload(exc: BaseException, note: str | None = None) -> dict[str, Any]:
    """The fields of a status record that describe a failure: type, message, traceback (the
    user's frames; wren's own are hidden), the pickled exception (``None`` when it cannot
    travel) and ``note``, naming the call (the client adds it to the exception)."""
    import traceback

    tracebacks.hide_internal_frames(exc)
    tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    payload: dict[str, Any] = {
        "exc_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "exc_message": str(exc),
        "traceback": tb_text,
        "exception": None,
        "call_note": note,
        "frames": tracebacks.frame_records(exc.__traceback__),
    }
    try:
        from tblib import pickling_support

        pickling_support.install(exc)
    except Exception:
        pass
    try:
        data = serialize.dumps(exc, "exception")
        pickle.loads(data)  # an exception that pickles but cannot unpickle is as bad
        payload["exception"] = data
    except Exception:
        payload["exception"] = None
    return payload


class _Tee(io.TextIOBase):
    """Collects what the call prints (thread-local: only the calling thread's output)."""

    def __init__(self, original: Any):
        self.original = original
        self.local = threading.local()

    def capture(self, buf: io.StringIO | None) -> None:
        self.local.buf = buf

    def write(self, s: str) -> int:
        buf = getattr(self.local, "buf", None)
        if buf is not None:
            buf.write(s)
            return len(s)
        return self.original.write(s)

    def flush(self) -> None:
        if getattr(self.local, "buf", None) is None:
            self.original.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")


_tee_lock = threading.Lock()


@functools.lru_cache(maxsize=64)
def _key(hex_secret: str) -> bytes:
    return bytes.fromhex(hex_secret)


def _install_tees() -> tuple[_Tee, _Tee]:
    out, err = sys.stdout, sys.stderr
    if isinstance(out, _Tee) and isinstance(err, _Tee):
        return out, err
    with _tee_lock:
        if not isinstance(sys.stdout, _Tee):
            sys.stdout = _Tee(sys.stdout)
        if not isinstance(sys.stderr, _Tee):
            sys.stderr = _Tee(sys.stderr)
        return sys.stdout, sys.stderr  # type: ignore[return-value]


class WorkerRuntime:
    """Runs calls; keeps warm caches (storage clients, functions, unpacked modules)."""

    MAX_LOG_CHARS = 1_000_000

    def __init__(self) -> None:
        self._storages: dict[str, Any] = {}
        self._funcs: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._module_dirs: dict[str, str] = {}
        self._shipped_owner: dict[str, str] = {}
        self._publishers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.cold = True
        self.started = time.time()
        self.host = os.uname().nodename  # socket.gethostname(), without importing socket

    # -- caches ---------------------------------------------------------------------------------
    def storage_for(self, job: Job) -> Any:
        spec = job.storage
        key = repr(sorted(spec["config"].items())) + spec["name"]
        with self._lock:
            st = self._storages.get(key)
            if st is None:
                from wren.plugins import get_registry

                reg = get_registry().get("storage", spec["name"])
                cfg = reg.config_class(**spec["config"]) if reg.config_class else None
                st = reg.backend_class(cfg)
                self._storages[key] = st
            return st

    def _unpack_modules(self, func_hash: str, zipped: bytes, names: list[str]) -> None:
        if func_hash in self._module_dirs:
            return
        import shutil
        import tempfile
        import zipfile

        base = os.path.join(tempfile.gettempdir(), f"wren-modules-{os.getuid()}")
        os.makedirs(base, mode=0o700, exist_ok=True)
        target = os.path.join(base, func_hash)
        if not os.path.isdir(target):
            tmp = tempfile.mkdtemp(dir=base, prefix=".unpack-")
            with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
                zf.extractall(tmp)
            try:
                os.rename(tmp, target)
            except OSError:  # another process won the race
                shutil.rmtree(tmp, ignore_errors=True)
        # a different version of a shipped module may be imported already: forget it
        for name in names:
            owner = self._shipped_owner.get(name)
            if owner is not None and owner != func_hash:
                for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                    del sys.modules[mod]
            self._shipped_owner[name] = func_hash
        if target in sys.path:
            sys.path.remove(target)
        sys.path.insert(0, target)
        self._module_dirs[func_hash] = target

    def load_function(self, job: Job, storage: Callable[[], Any], secret: bytes) -> Any:
        """The job's function (verified, cached); ``storage()`` gives the job's storage."""
        cache_key = (job.func_key, job.secret)
        with self._lock:
            if cache_key in self._funcs:
                self._funcs.move_to_end(cache_key)
                return self._funcs[cache_key]
        # the localhost pool hands workers the signed function with the job: no storage read
        blob = job.func_package if job.func_package is not None else storage().get_object(job.bucket, job.func_key)
        package = pickle.loads(serialize.verify(secret, blob, "the stored function", job.func_key))
        if package.get("modules"):
            self._unpack_modules(job.func_key.rsplit("/", 1)[-1], package["modules"], package["module_names"])
        func = serialize.loads(package["func"], "the function")
        tracebacks.register_sources(func, package.get("sources"))
        with self._lock:
            self._funcs[cache_key] = func
            while len(self._funcs) > 64:
                self._funcs.popitem(last=False)
        return func

    def load_data(self, job: Job, call: Call, storage: Callable[[], Any], secret: bytes) -> tuple:
        raw: bytes | memoryview
        if call.data is not None:
            raw = call.data
        else:
            assert call.data_range is not None and job.data_key is not None
            first, last = call.data_range
            blob = storage().get_object(job.bucket, job.data_key, (first, last))
            raw = serialize.verify(secret, blob, "the stored call data", data_place(job.data_key, call.call_id))
        return serialize.loads(raw, "the call's data")

    # -- running a call -------------------------------------------------------------------------
    def run(
        self, job: Job | dict[str, Any], call: Call | dict[str, Any], write_status: bool | None = None,
        *, result_sink: Callable[[Any, str], tuple[bytes | None, int]] | None = None,
    ) -> dict[str, Any]:
        """Run one call and return its status record (written to storage when asked).

        ``result_sink(result, what)``: where the status is not stored, a backend with its own
        channel to the client (the localhost pool's sockets) takes the result of any size:
        it returns ``(pickled bytes, size)`` for the status record, or ``(None, size)`` when it
        sent the result itself (see :mod:`wren.worker.stream`).

        Thread-safe, but calls must not share a process with the client: ``extra_env`` changes
        the process's environment while a call runs, and a call may exit the process."""
        t_start = time.time()
        cold, self.cold = self.cold, False
        job = Job.from_wire(job)
        call = Call.from_wire(call)
        call_id = call.call_id
        attempt = call.attempt
        status: dict[str, Any] = {
            "job_key": job.job_key,
            "call_id": call_id,
            "attempt": attempt,
            "success": False,
            "futures": False,
        }
        stats: dict[str, Any] = {
            "worker_start_tstamp": t_start,
            "worker_cold_start": cold,
            "worker_host": self.host,
            "worker_pid": os.getpid(),
            "worker_python": PYTHON_VERSION,
        }
        status["stats"] = stats
        logs = io.StringIO()
        made: list[Any] = []

        def storage() -> Any:  # the job's storage, built when first needed
            if not made:
                made.append(self.storage_for(job))
            return made[0]

        secret = _key(job.secret)
        publisher = self.publisher_for(job)
        if publisher is not None:
            self._publish(publisher, job, "start", {"job_key": job.job_key, "call_id": call_id})
        arguments: Any = None
        try:
            if job.python and job.python != PYTHON_VERSION:
                raise VersionMismatchError(
                    f"the client runs Python {job.python} but this runtime has Python {PYTHON_VERSION}: "
                    f"use a runtime built for Python {job.python} (wren runtime build)"
                )
            func = self.load_function(job, storage, secret)
            args, kwargs = self.load_data(job, call, storage, secret)
            if job.resolve_futures:  # futures passed as arguments (chaining): their results
                from wren.worker.collect import resolve_futures

                args, kwargs = resolve_futures((args, kwargs), storage(), job.bucket, job.timeout, secret,
                                               {"retries": job.retries, "retry_on": job.retry_on})
            arguments = (args, kwargs)  # named in the note of a failure
            kwargs = dict(kwargs)
            reserved = job.reserved or {}
            if reserved.get("id"):
                kwargs.setdefault("id", int(call_id))
            if reserved.get("storage"):
                from wren.storage.client import Storage

                kwargs.setdefault("storage", Storage(storage_backend=storage()))
            if (reserved.get("obj") or reserved.get("url")) and call.obj is not None:
                from wren.partitioner import make_obj

                kwargs["obj" if reserved.get("obj") else "url"] = make_obj(call.obj, storage(), job)
            stats["worker_func_start_tstamp"] = time.time()
            result = self._call(func, args, kwargs, job, call, logs)
            stats["worker_func_end_tstamp"] = time.time()
            if contains_futures(result):
                status["futures"] = True
            what = f"the result of call {call_id} (type {type(result).__name__})"
            if result_sink is not None and not job.store_results and not job.result_in_storage:
                sent, stats["func_result_size"] = result_sink(result, what)
                del result
                status["success"] = True
                if sent is None:
                    status["result_streamed"] = True
                else:
                    status["result"] = sent
                data = None
            else:
                data = serialize.dumps(result, what)
                del result
                stats["func_result_size"] = len(data)
                status["success"] = True
            if data is None:
                pass
            elif len(data) <= job.inline_result_limit and not job.result_in_storage:
                status["result"] = data
            else:
                status["result_key"] = result_key(job.prefix, call_id, attempt)
                storage().put_object(job.bucket, status["result_key"], serialize.sign(secret, data, status["result_key"]))
        except BaseException as exc:  # the user's exception, or ours: both become the status
            stats.setdefault("worker_func_end_tstamp", time.time())
            if isinstance(exc, SystemExit):
                err: BaseException = WorkerDiedError(
                    f"call {call_id} called sys.exit({exc.code!r}); return a value or raise an "
                    "exception instead"
                )
                status["error_kind"] = "worker_died"
            elif isinstance(exc, (StorageError, VersionMismatchError)) or (
                isinstance(exc, SerializationError) and "worker_func_start_tstamp" not in stats
            ):
                err = exc
                status["error_kind"] = "system"
            else:
                err = exc
                status["error_kind"] = "user"
            status.update(exception_payload(err, tracebacks.call_note(job.job_key, call_id, job.func_name, arguments, exc)))
        logs_text = logs.getvalue()
        if len(logs_text) > self.MAX_LOG_CHARS:
            logs_text = logs_text[-self.MAX_LOG_CHARS:]
        status["logs"] = logs_text
        stats["worker_end_tstamp"] = time.time()
        if write_status is None:
            write_status = job.store_results
        if write_status:
            self.write_status(job, status, made[0] if made else None)
        if publisher is not None:
            self._publish(publisher, job, "finish", status)
        return status

    def publisher_for(self, job: Job) -> Any:
        events = job.events
        if not events:
            return None
        key = repr(sorted((k, str(v)) for k, v in events.items()))
        with self._lock:
            if key in self._publishers:
                return self._publishers[key]
        try:
            from wren.plugins import get_registry

            spec = get_registry().get("monitor", events["monitor"])
            pub = spec.monitor_class.worker_publisher(events)
        except Exception as exc:  # monitoring must never fail a call
            import logging

            logging.getLogger("wren.worker").warning("no event publisher for %s: %s", events.get("monitor"), exc)
            pub = None
        with self._lock:
            self._publishers[key] = pub
        return pub

    @staticmethod
    def _publish(publisher: Any, job: Job, event: str, status: dict[str, Any] | None) -> None:
        try:
            publisher.publish(job, event, status)
        except Exception as exc:
            import logging

            logging.getLogger("wren.worker").warning("publishing %s event failed: %s", event, exc)

    def write_status(self, job: Job, status: dict[str, Any], storage: Any = None) -> None:
        """Sign ``status`` with the job's key and store it where the client looks for it."""
        job = Job.from_wire(job)
        storage = storage or self.storage_for(job)
        secret = bytes.fromhex(job.secret)
        key = status_key(job.prefix, status["call_id"], status.get("attempt", 0))
        body = serialize.sign(secret, pickle.dumps(status, protocol=pickle.HIGHEST_PROTOCOL), key)
        storage.put_object(job.bucket, key, body)

    def _call(self, func: Any, args: tuple, kwargs: dict, job: Job, call: Call, logs: io.StringIO) -> Any:
        extra_env = job.extra_env or {}
        saved_env = {k: os.environ.get(k) for k in extra_env} if extra_env else {}
        out, err = _install_tees()
        ctx: dict[str, Any] = {
            "config": job.config,
            "executor_id": job.executor_id,
            "executor_prefix": job.executor_prefix,
            "root_id": job.root_id,
            "root_secret": job.root_secret,
            "secret": job.secret,
            "retry_policy": {"retries": job.retries, "retry_on": job.retry_on},
            "job_id": job.job_id,
            "call_id": call.call_id,
            "executors": [],
        }
        out.capture(logs)
        err.capture(logs)
        context.set_current(ctx)
        try:
            if extra_env:
                os.environ.update({str(k): str(v) for k, v in extra_env.items()})
            result = func(*args, **kwargs)
            self._settle_nested(ctx, result)
            return result
        finally:
            context.set_current(None)
            out.capture(None)
            err.capture(None)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @staticmethod
    def _settle_nested(ctx: dict[str, Any], result: Any) -> None:
        """Executors created by the call whose workers live in this process must finish their
        calls before the call returns (the client will read those results from storage)."""
        for ex in ctx.get("executors", []):
            if getattr(ex, "_bound_to_process", False):
                ex.wait(throw_except=False, show_progressbar=False)


_runtime: WorkerRuntime | None = None


def get_runtime() -> WorkerRuntime:
    global _runtime
    if _runtime is None:
        _runtime = WorkerRuntime()
    return _runtime


def runtime_metadata() -> dict[str, Any]:
    """What this runtime offers: Python and wren versions, importable top-level modules."""
    import pkgutil

    cwd = os.getcwd()
    paths = [p for p in sys.path if p and os.path.abspath(p) != cwd]
    modules = set(serialize.installed_top_level())
    modules.update(m.name for m in pkgutil.iter_modules(paths))
    return {"python": PYTHON_VERSION, "wren": __version__, "modules": sorted(modules)}
