"""Waiting for other calls' results from inside a call (the reducer of map_reduce)."""
from __future__ import annotations

import concurrent.futures
import pickle
import time
from typing import Any

from wren import serialize
from wren.errors import CallTimeoutError
from wren.future import rebuild_exception
from wren.keys import parse_status_key
from wren.worker import context

_RETRYABLE = ("worker_died", "timeout", "system")


def collect_results(storage: Any, bucket: str, refs: list[tuple[str, str]], timeout: float) -> list[Any]:
    """Results of the calls ``refs`` = [(job prefix, call id)], in order, once all finished.

    Lists each job prefix (one request for many calls) with a growing pause between listings.
    Each attempt of a call has its own status; the first successful one is used. A failed
    attempt that the client will not retry (the job's retry policy) re-raises its exception.
    """
    ctx = context.current() or {}
    secret = bytes.fromhex(ctx["secret"])
    policy = ctx.get("retry_policy") or {"retries": 0, "retry_on": []}
    wanted: dict[str, set[str]] = {}
    for prefix, cid in refs:
        wanted.setdefault(prefix, set()).add(cid)
    found: dict[tuple[str, str], Any] = {}
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    delay = 0.02

    def read(key: str) -> dict[str, Any]:
        return pickle.loads(serialize.verify(secret, storage.get_object(bucket, key), "a map status record", key))

    while True:
        for prefix, cids in wanted.items():
            for key in storage.list_keys(bucket, prefix + "/"):
                parsed = parse_status_key(prefix, key)
                if parsed is None or parsed[0] not in cids or (prefix, parsed[0]) in found or key in seen:
                    continue
                seen.add(key)
                status = read(key)
                if status.get("success"):
                    found[(prefix, parsed[0])] = status
                    continue
                kind = status.get("error_kind") or "user"
                exc_type = (status.get("exc_type") or "").replace("builtins.", "")
                names = policy["retry_on"]
                retried = kind in _RETRYABLE or exc_type in names or exc_type.rsplit(".", 1)[-1] in names
                if not retried or parsed[1] >= policy["retries"]:
                    raise rebuild_exception(status)
        missing = len(refs) - len(found)
        if not missing:
            break
        if time.monotonic() > deadline:
            raise CallTimeoutError(f"{missing} map call(s) did not finish within {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)

    def fetch(ref: tuple[str, str]) -> Any:
        status = found[ref]
        data = status.get("result")
        if data is None:
            data = serialize.verify(secret, storage.get_object(bucket, status["result_key"]), "a map result",
                                    status["result_key"])
        return serialize.loads(data, f"the result of map call {ref[1]}")

    with concurrent.futures.ThreadPoolExecutor(min(32, len(refs))) as pool:
        return list(pool.map(fetch, refs))
