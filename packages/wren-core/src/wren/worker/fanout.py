"""The remote invoker: an activation that starts a job's calls from inside the platform.

A backend with a remote invoker (``openwhisk``/``ibm_cf`` with ``remote_invoker: true``) sends
one payload ``{"job": ..., "calls": [...], "remote_invoker": {"backend": NAME, ...}}`` instead
of one invocation per call; the container entry point hands it to :func:`fan_out`, which builds
the job's compute backend from the config the job carries (the same config nested executors
inherit) and calls its :meth:`~wren.compute.base.ComputeBackend.invoke_from_platform`, close to
the platform's API. The answer says which calls could not be started; the client fails those
futures (or, when nothing was started because the runtime cannot invoke at all, invokes them
itself).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from wren.records import Call, Job

logger = logging.getLogger("wren.worker")


class _Failures:
    """The channel of a fan-out: only failures matter (statuses come from the calls' workers)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.errors: dict[str, str] = {}

    def failed(self, job_key: str, call_id: str, error: BaseException) -> None:
        with self.lock:
            self.errors.setdefault(call_id, str(error) or type(error).__name__)

    def deliver(self, status: dict[str, Any]) -> None:
        pass

    def running(self, job_key: str, call_id: str) -> None:
        pass


def fan_out(job: Job | dict[str, Any], calls: list[Call] | list[dict[str, Any]], spec: dict[str, Any],
            deadline: float | None = None) -> dict[str, Any]:
    """Start ``calls`` through backend ``spec["backend"]``; never raises. ``deadline`` (epoch
    seconds: when the platform stops this activation) reaches the backend as
    ``spec["deadline"]``, so that it gives up in time to answer. Returns
    ``{"remote_invoker": {"started": n, "failed": [{"call_id", "error"}], "error": str|None,
    "seconds": s}}``; ``error`` with nothing started means this runtime cannot invoke."""
    from wren.config import load_config, parse_section
    from wren.plugins import get_registry

    t0 = time.monotonic()
    job = Job.from_wire(job)
    calls = [Call.from_wire(c) for c in calls]
    name = str(spec.get("backend"))
    failures = _Failures()
    try:
        cfg = load_config(job.config or {}, read_file=False, read_env=False)
        plugin = get_registry().get("compute", name)
        section = parse_section(plugin.config_class, name, cfg.section(name)) if plugin.config_class else None
        backend = plugin.backend_class(section, cfg.wren)
    except Exception as exc:  # noqa: BLE001 - reported to the client, which invokes instead
        logger.warning("remote invoker: cannot build backend %r: %s", name, exc)
        return {"remote_invoker": {"started": 0, "failed": [], "seconds": time.monotonic() - t0,
                                   "error": f"{type(exc).__name__}: {exc}"}}
    try:
        backend.start()
        backend.invoke_from_platform(job, calls, failures, {**spec, "deadline": deadline} if deadline else spec)
    except Exception as exc:  # noqa: BLE001 - the calls' fate is unknown: all are reported (retries may re-send)
        logger.warning("remote invoker: %s", exc)
        for call in calls:
            failures.failed(job.job_key, call.call_id, exc)
    finally:
        backend.close()
    failed = [{"call_id": cid, "error": err} for cid, err in failures.errors.items()]
    return {"remote_invoker": {"started": len(calls) - len(failed), "failed": failed, "error": None,
                               "seconds": time.monotonic() - t0}}
