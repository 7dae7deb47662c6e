"""Waiting for other calls' results from inside a call (the reducer of map_reduce)."""
from __future__ import annotations

import concurrent.futures
import pickle
import time
from typing import Any

from wren import serialize
from wren.errors import CallTimeoutError
from wren.future import ResponseFuture
from wren.worker import context
from wren.worker.runtime import status_key


def collect_results(storage: Any, bucket: str, refs: list[tuple[str, str]], timeout: float) -> list[Any]:
    """Results of the calls ``refs`` = [(job prefix, call id)], in order, once all finished.

    Lists each job prefix (one request for many calls) with a growing pause between listings.
    A failed call re-raises its exception here.
    """
    ctx = context.current() or {}
    secret = bytes.fromhex(ctx["secret"])
    wanted: dict[str, set[str]] = {}
    for prefix, cid in refs:
        wanted.setdefault(prefix, set()).add(cid)
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        missing = 0
        for prefix, cids in wanted.items():
            keys = set(storage.list_keys(bucket, prefix + "/"))
            missing += sum(1 for c in cids if status_key(prefix, c) not in keys)
        if not missing:
            break
        if time.monotonic() > deadline:
            raise CallTimeoutError(f"{missing} map call(s) did not finish within {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)

    def fetch(ref: tuple[str, str]) -> Any:
        prefix, cid = ref
        blob = storage.get_object(bucket, status_key(prefix, cid))
        status = pickle.loads(serialize.verify(secret, blob, "a map status record"))
        if not status.get("success"):
            raise ResponseFuture._rebuild_exception(status)
        data = status.get("result")
        if data is None:
            data = serialize.verify(secret, storage.get_object(bucket, status["result_key"]), "a map result")
        return serialize.loads(data, f"the result of map call {cid}")

    with concurrent.futures.ThreadPoolExecutor(min(32, len(refs))) as pool:
        return list(pool.map(fetch, refs))
