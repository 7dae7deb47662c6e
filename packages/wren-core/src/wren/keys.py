"""Where things live in storage: the key layout of executors, jobs and calls.

    wren.jobs/<executor_id>/funcs/<sha256>.pickle      the signed function (once per executor)
    wren.jobs/<executor_id>/<job_id>/data.pickle       call data read by byte range (large data only)
    wren.jobs/<executor_id>/<job_id>/<call_id>[.rN].status   each attempt's signed status record
    wren.jobs/<executor_id>/<job_id>/<call_id>[.rN].result   its signed result, when not inline

Each attempt of a call (``N`` > 0 for retries and speculative copies) writes its own records,
so a call that runs twice never overwrites another attempt's.
"""
from __future__ import annotations

#: The folder of every executor's temporary data in its bucket.
JOBS_PREFIX = "wren.jobs"


def executor_prefix(executor_id: str) -> str:
    return f"{JOBS_PREFIX}/{executor_id}"


def func_key(executor_prefix: str, content_hash: str) -> str:
    return f"{executor_prefix}/funcs/{content_hash}.pickle"


def data_key(job_prefix: str) -> str:
    return f"{job_prefix}/data.pickle"


def data_place(data_key: str, call_id: str) -> str:
    """What one call's byte range of ``data_key`` is signed for: that object and that call."""
    return f"{data_key}#{call_id}"


def _attempt_suffix(attempt: int) -> str:
    return f".r{attempt}" if attempt else ""


def status_key(prefix: str, call_id: str, attempt: int = 0) -> str:
    """The status record of one attempt of a call under the job's ``prefix``."""
    return f"{prefix}/{call_id}{_attempt_suffix(attempt)}.status"


def result_key(prefix: str, call_id: str, attempt: int = 0) -> str:
    """The result of one attempt of a call (when too large to travel in its status)."""
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


def call_ids(n: int) -> list[str]:
    """The ids of a job's ``n`` calls: zero-padded indices (``00000``, ``00001``...)."""
    width = max(5, len(str(n - 1)))
    return [str(i).zfill(width) for i in range(n)]
