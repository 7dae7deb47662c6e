"""Waiting for other calls' results from inside a call (the reducer of map_reduce)."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import pickle
import time
from typing import Any

from wren import serialize
from wren.errors import CallTimeoutError
from wren.future import rebuild_exception
from wren.keys import parse_status_key
from wren.worker import context

_RETRYABLE = ("worker_died", "timeout", "system")


def collect_results(storage: Any, bucket: str, refs: list[tuple[str, str]], timeout: float,
                    secret: bytes | None = None, policy: dict[str, Any] | None = None) -> list[Any]:
    """Results of the calls ``refs`` = [(job prefix, call id)], in order, once all finished.

    Lists each job prefix (one request for many calls) with a growing pause between listings.
    Each attempt of a call has its own status; the first successful one is used. A failed
    attempt that the client will not retry (the job's retry policy) re-raises its exception.
    """
    ctx = context.current() or {}
    secret = secret if secret is not None else bytes.fromhex(ctx["secret"])
    policy = policy or ctx.get("retry_policy") or {"retries": 0, "retry_on": []}
    wanted: dict[str, set[str]] = {}
    for prefix, cid in refs:
        wanted.setdefault(prefix, set()).add(cid)
    found: dict[tuple[str, str], Any] = {}
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    delay = 0.02

    def read(key: str) -> dict[str, Any]:
        blob = serialize.read_signed(storage, bucket, key, "a map status record")
        return pickle.loads(serialize.verify(secret, blob, "a map status record", key))

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
                retried = kind in _RETRYABLE or _retry_on_matches(status, policy["retry_on"])
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
            blob = serialize.read_signed(storage, bucket, status["result_key"], "a map result",
                                         (status.get("stats") or {}).get("func_result_size"))
            data = serialize.verify(secret, blob, "a map result",
                                    status["result_key"])
        return serialize.loads(data, f"the result of map call {ref[1]}")

    with concurrent.futures.ThreadPoolExecutor(min(32, len(refs))) as pool:
        return list(pool.map(fetch, refs))


def _retry_on_matches(status: dict[str, Any], names: list[str]) -> bool:
    """Whether the client retries a call that raised this status's exception: its type or one
    of its bases is in ``retry_on`` (as ``except`` matches)."""
    if not names:
        return False
    exc_type = (status.get("exc_type") or "").replace("builtins.", "")
    qualnames = [exc_type]
    try:
        exc = pickle.loads(status["exception"]) if status.get("exception") else None
    except Exception:
        exc = None
    if exc is not None:
        qualnames = [f"{c.__module__}.{c.__qualname__}".replace("builtins.", "") for c in type(exc).__mro__]
    wanted = set(names)
    return any(q in wanted or q.rsplit(".", 1)[-1] in wanted for q in qualnames)


@dataclasses.dataclass(frozen=True)
class FutureRef:
    """A future passed in a call's arguments (chaining): the worker puts its result there."""

    prefix: str
    call_id: str


def resolve_futures(value: Any, storage: Any, bucket: str, timeout: float, secret: bytes,
                    policy: dict[str, Any]) -> Any:
    """``value`` (a call's ``(args, kwargs)``) with every :class:`FutureRef` in it, at any depth
    of lists, tuples and dicts, replaced by that call's result (waited for)."""
    refs: list[FutureRef] = []

    def find(v: Any) -> None:
        if isinstance(v, FutureRef):
            refs.append(v)
        elif isinstance(v, (list, tuple)):
            for x in v:
                find(x)
        elif isinstance(v, dict):
            for x in v.values():
                find(x)

    find(value)
    if not refs:
        return value
    unique = list(dict.fromkeys(refs))
    results = collect_results(storage, bucket, [(r.prefix, r.call_id) for r in unique], timeout, secret, policy)
    by_ref = dict(zip(unique, results, strict=True))

    def put(v: Any) -> Any:
        if isinstance(v, FutureRef):
            return by_ref[v]
        if isinstance(v, list):
            return [put(x) for x in v]
        if isinstance(v, tuple):
            return tuple(put(x) for x in v)
        if isinstance(v, dict):
            return {k: put(x) for k, x in v.items()}
        return v

    return put(value)
