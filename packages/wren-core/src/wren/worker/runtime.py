"""The worker runtime: the one piece of code that runs every call, whatever the backend.

``WorkerRuntime.run(job, call)`` fetches (and verifies) the function and the call's data, binds
the reserved parameters, runs the function with ``extra_env`` and captured stdout/stderr, and
produces the call's status record, which it also writes to storage when the job asks for it.
Backends deliver ``{"job": ..., "call": ...}`` to it: the localhost pool through a pipe,
containers through :mod:`wren.worker.__main__`.
"""
from __future__ import annotations

import io
import os
import pickle
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections import OrderedDict
from typing import Any

from wren import serialize
from wren.errors import (
    SerializationError,
    StorageError,
    VersionMismatchError,
    WorkerDiedError,
)
from wren.version import __version__
from wren.worker import context

PYTHON_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _attempt_suffix(attempt: int) -> str:
    return f".r{attempt}" if attempt else ""


def status_key(prefix: str, call_id: str, attempt: int = 0) -> str:
    """Each attempt of a call writes its own status (and result), so a call that runs twice
    (a retry, a speculative copy) never overwrites or corrupts another attempt's record."""
    return f"{prefix}/{call_id}{_attempt_suffix(attempt)}.status"


def result_key(prefix: str, call_id: str, attempt: int = 0) -> str:
    return f"{prefix}/{call_id}{_attempt_suffix(attempt)}.result"


def parse_status_key(prefix: str, key: str) -> tuple[str, int] | None:
    """``(call_id, attempt)`` of a status key under ``prefix``, or ``None``."""
    if not key.endswith(".status") or not key.startswith(prefix + "/"):
        return None
    name = key[len(prefix) + 1: -len(".status")]
    call_id, _, attempt = name.partition(".r")
    if "/" in call_id:
        return None
    try:
        return call_id, int(attempt or 0)
    except ValueError:
        return None


def _exception_payload(exc: BaseException) -> dict[str, Any]:
    tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    payload: dict[str, Any] = {
        "exc_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "exc_message": str(exc),
        "traceback": tb_text,
        "exception": None,
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


def _install_tees() -> tuple[_Tee, _Tee]:
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
        self.host = socket.gethostname()

    # -- caches ---------------------------------------------------------------------------------
    def storage_for(self, job: dict[str, Any]) -> Any:
        spec = job["storage"]
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

    def load_function(self, job: dict[str, Any], storage: Any, secret: bytes) -> Any:
        cache_key = (job["func_key"], job["secret"])
        with self._lock:
            if cache_key in self._funcs:
                self._funcs.move_to_end(cache_key)
                return self._funcs[cache_key]
        blob = storage.get_object(job["bucket"], job["func_key"])
        package = pickle.loads(serialize.verify(secret, blob, "the stored function"))
        if package.get("modules"):
            self._unpack_modules(job["func_key"].rsplit("/", 1)[-1], package["modules"], package["module_names"])
        func = serialize.loads(package["func"], "the function")
        with self._lock:
            self._funcs[cache_key] = func
            while len(self._funcs) > 64:
                self._funcs.popitem(last=False)
        return func

    def load_data(self, job: dict[str, Any], call: dict[str, Any], storage: Any, secret: bytes) -> tuple:
        if call.get("data") is not None:
            raw = call["data"]
        else:
            first, last = call["data_range"]
            blob = storage.get_object(job["bucket"], job["data_key"], (first, last))
            raw = serialize.verify(secret, blob, "the stored call data")
        return serialize.loads(raw, "the call's data")

    # -- running a call -------------------------------------------------------------------------
    def run(self, job: dict[str, Any], call: dict[str, Any], write_status: bool | None = None) -> dict[str, Any]:
        """Run one call and return its status record (written to storage when asked)."""
        t_start = time.time()
        cold, self.cold = self.cold, False
        call_id = call["call_id"]
        attempt = int(call.get("attempt") or 0)
        status: dict[str, Any] = {
            "job_key": job["job_key"],
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
        storage = None
        secret = bytes.fromhex(job["secret"])
        publisher = self.publisher_for(job)
        if publisher is not None:
            self._publish(publisher, job, "start", {"job_key": job["job_key"], "call_id": call_id})
        try:
            if job.get("python") and job["python"] != PYTHON_VERSION:
                raise VersionMismatchError(
                    f"the client runs Python {job['python']} but this runtime has Python {PYTHON_VERSION}: "
                    f"use a runtime built for Python {job['python']} (wren runtime build)"
                )
            storage = self.storage_for(job)
            func = self.load_function(job, storage, secret)
            args, kwargs = self.load_data(job, call, storage, secret)
            kwargs = dict(kwargs)
            reserved = job.get("reserved") or {}
            if reserved.get("id"):
                kwargs.setdefault("id", int(call_id))
            if reserved.get("storage"):
                from wren.storage.client import Storage

                kwargs.setdefault("storage", Storage(storage_backend=storage))
            if reserved.get("obj") and call.get("obj") is not None:
                from wren.partitioner import make_obj

                kwargs["obj"] = make_obj(call["obj"], storage, job)
            stats["worker_func_start_tstamp"] = time.time()
            result = self._call(func, args, kwargs, job, call, logs)
            stats["worker_func_end_tstamp"] = time.time()
            from wren.future import contains_futures

            if contains_futures(result):
                status["futures"] = True
            data = serialize.dumps(result, f"the result of call {call_id} (type {type(result).__name__})")
            stats["func_result_size"] = len(data)
            status["success"] = True
            if len(data) <= job.get("inline_result_limit", 65536) and not job.get("result_in_storage"):
                status["result"] = data
            else:
                status["result_key"] = result_key(job["prefix"], call_id, attempt)
                storage.put_object(job["bucket"], status["result_key"], serialize.sign(secret, data))
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
            status.update(_exception_payload(err))
        logs_text = logs.getvalue()
        if len(logs_text) > self.MAX_LOG_CHARS:
            logs_text = logs_text[-self.MAX_LOG_CHARS:]
        status["logs"] = logs_text
        stats["worker_end_tstamp"] = time.time()
        if write_status is None:
            write_status = job.get("store_results", True)
        if write_status:
            self.write_status(job, status, storage)
        if publisher is not None:
            self._publish(publisher, job, "finish", status)
        return status

    def publisher_for(self, job: dict[str, Any]) -> Any:
        events = job.get("events")
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
    def _publish(publisher: Any, job: dict[str, Any], event: str, status: dict[str, Any] | None) -> None:
        try:
            publisher.publish(job, event, status)
        except Exception as exc:
            import logging

            logging.getLogger("wren.worker").warning("publishing %s event failed: %s", event, exc)

    def write_status(self, job: dict[str, Any], status: dict[str, Any], storage: Any = None) -> None:
        storage = storage or self.storage_for(job)
        secret = bytes.fromhex(job["secret"])
        body = serialize.sign(secret, pickle.dumps(status, protocol=pickle.HIGHEST_PROTOCOL))
        storage.put_object(
            job["bucket"], status_key(job["prefix"], status["call_id"], status.get("attempt", 0)), body
        )

    def _call(self, func: Any, args: tuple, kwargs: dict, job: dict, call: dict, logs: io.StringIO) -> Any:
        extra_env = job.get("extra_env") or {}
        saved_env = {k: os.environ.get(k) for k in extra_env}
        out, err = _install_tees()
        ctx = {
            "config": job.get("config"),
            "executor_id": job["executor_id"],
            "executor_prefix": job["executor_prefix"],
            "root_id": job["root_id"],
            "root_secret": job["root_secret"],
            "secret": job["secret"],
            "retry_policy": {"retries": job.get("retries", 0), "retry_on": job.get("retry_on", [])},
            "job_id": job["job_id"],
            "call_id": call["call_id"],
            "executors": [],
        }
        out.capture(logs)
        err.capture(logs)
        context.set_current(ctx)
        try:
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
