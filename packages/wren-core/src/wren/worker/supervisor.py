"""Running calls in a supervised child process: the timeout is enforced by killing it, and a
call that kills its process (out of memory, ``os._exit``, a signal) still gets a status record.

Used by the container entry point (:mod:`wren.worker.__main__`), where nothing else watches the
call. The localhost pool supervises its own worker processes instead.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from typing import Any

from wren.errors import CallTimeoutError, WorkerDiedError
from wren.worker.runtime import _exception_payload, get_runtime

logger = logging.getLogger("wren.worker")
_ctx = multiprocessing.get_context("fork") if hasattr(os, "fork") else multiprocessing.get_context("spawn")


def _child(job: dict[str, Any], call: dict[str, Any]) -> None:
    os.environ["WREN_WORKER"] = "1"
    get_runtime().run(job, call, write_status=True)


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "it did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory: the kernel's OOM killer sends SIGKILL; raise runtime_memory)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {code}"


def run_supervised(job: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
    """Run one call in a child process; returns a short summary. The status record is in
    storage afterwards whatever happened to the child."""
    timeout = float(job.get("timeout") or 600)
    started = time.time()
    proc = _ctx.Process(target=_child, args=(job, call), daemon=True)
    proc.start()
    proc.join(timeout)
    runtime = get_runtime()
    if proc.is_alive():
        proc.kill()
        proc.join(5)
        err: BaseException = CallTimeoutError(
            f"call {call['call_id']} of job {job['job_key']} ran longer than its timeout of "
            f"{timeout:g} s and was stopped; raise timeout= if it needs longer"
        )
        kind = "timeout"
    elif proc.exitcode != 0:
        err = WorkerDiedError(
            f"the process running call {call['call_id']} of job {job['job_key']} died: "
            f"{_exit_reason(proc.exitcode)}"
        )
        kind = "worker_died"
    else:
        return {"call_id": call["call_id"], "ok": True}
    status = {
        "job_key": job["job_key"],
        "call_id": call["call_id"],
        "attempt": int(call.get("attempt") or 0),
        "success": False,
        "futures": False,
        "error_kind": kind,
        "logs": "",
        "stats": {"worker_start_tstamp": started, "worker_end_tstamp": time.time(), "worker_host": runtime.host},
        **_exception_payload(err),
    }
    try:
        runtime.write_status(job, status)
    except Exception as exc:  # the client's own deadline watchdog will report it
        logger.error("could not write the status of call %s: %s", call["call_id"], exc)
    return {"call_id": call["call_id"], "ok": False, "error": str(err)}
