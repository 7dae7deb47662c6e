"""The peers' spellings (PyWren for IBM Cloud 1.x, Lithops 3.x) of executor and map options,
turned into wren's. ``docs/migrating.md`` lists every one of them."""
from __future__ import annotations

import logging
from typing import Any

from wren.errors import InvalidInputError

logger = logging.getLogger("wren.executor")

#: Keyword arguments of the peers' executors: their name -> wren's (``None``: accepted, no effect).
EXECUTOR_KWARGS: dict[str, str | None] = {
    "workers": "max_workers",  # PyWren 1.x
    "compute_backend": "backend",  # PyWren 1.x
    "storage_backend": "storage",  # PyWren 1.x
    "type": None,  # Lithops 2: 'serverless', 'standalone', 'localhost' (the backend decides)
    "mode": None,  # Lithops 3: same
    "compute_backend_region": None,
    "storage_backend_region": None,
    "region": None,
    "worker_processes": None,  # Lithops: processes per worker; a wren worker runs one call
    "remote_invoker": None,  # set it in the backend's own section (ibm_cf/openwhisk)
}


def executor_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Translate the peers' executor keyword arguments in place; returns ``kwargs``."""
    for name, target in EXECUTOR_KWARGS.items():
        if name not in kwargs:
            continue
        value = kwargs.pop(name)
        if target is None:
            if value not in (None, False):
                logger.warning("%s=%r has no effect in wren (see docs/migrating.md)", name, value)
            continue
        if value is not None and kwargs.get(target) is None:
            kwargs[target] = value
    if kwargs.get("log_level") is False:  # Lithops' default: no logging set up
        kwargs["log_level"] = None
    return kwargs


def merge_overrides(named: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The executor's named arguments, then the other keywords where a named one is unset."""
    out = dict(named)
    for key, value in kwargs.items():
        if out.get(key) is None:
            out[key] = value
    return out


def object_chunking(
    chunk_size: int | None, chunk_n: int | None, obj_chunk_size: int | None, obj_chunk_number: int | None,
    obj_newline: str | None, chunksize: Any, peer_options: dict[str, Any] | None = None,
) -> tuple[int | None, int | None, str | None]:
    """``(bytes per chunk, chunks per object, newline)`` from both spellings (PyWren's
    ``chunk_size``/``chunk_n``, Lithops' ``obj_chunk_size``/``obj_chunk_number``/``obj_newline``).

    ``chunksize`` (Lithops: items per worker invocation) is checked and accepted: every wren
    call is its own invocation already scheduled on warm workers, so it changes nothing but the
    number of invocations a cloud platform would bill. ``peer_options``: PyWren 1.x's
    ``invoke_pool_threads``/``remote_invocation``, accepted (the backend's settings decide)."""
    unknown = sorted(set(peer_options or {}) - {"invoke_pool_threads", "remote_invocation", "remote_invocation_groups",
                                                 "extra_params"})
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
    if chunksize is not None and (isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1):
        raise InvalidInputError(f"chunksize must be a positive whole number of calls per worker, got {chunksize!r}")
    if obj_newline not in ("\n", "\r\n", None):
        raise InvalidInputError(
            f"obj_newline must be '\\n' (the default: chunks keep whole lines), '\\r\\n' or None "
            f"(exact-size chunks), got {obj_newline!r}"
        )
    size = chunk_size if chunk_size is not None else obj_chunk_size
    n = chunk_n if chunk_n is not None else obj_chunk_number
    if size is not None and n is not None and chunk_n is None:
        size = None  # Lithops: obj_chunk_number has precedence over obj_chunk_size
    return size, n, obj_newline


#: Options of the peers' ``wait``/``get_result``/``clean`` that wren accepts and needs not:
#: how often to poll and with how many threads (wren is told when calls finish), logging.
PEER_WAIT_OPTIONS = frozenset({
    "threadpool_size", "wait_dur_sec", "THREADPOOL_SIZE", "WAIT_DUR_SEC",  # Lithops, PyWren 1.x
    "cloudobjects", "clean_fn", "log", "on_exit",  # clean() of PyWren 1.x / Lithops
})


def check_peer_wait_options(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - PEER_WAIT_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}")


def delete_prefixes(storage_backend: Any, bucket: str, prefixes: list[str], keep_cloudobjects: bool) -> int:
    """Delete everything under ``prefixes``; with ``keep_cloudobjects`` the cloud objects that
    calls made (``<executor prefix>/cloudobjects/``) stay."""
    from wren.errors import StorageNoSuchBucketError
    from wren.storage.client import CLOUDOBJECTS

    removed = 0
    for prefix in prefixes:
        try:
            if not keep_cloudobjects:
                removed += storage_backend.delete_prefix(bucket, prefix)
                continue
            doomed = [k for k in storage_backend.list_keys(bucket, prefix) if f"/{CLOUDOBJECTS}/" not in k[len(prefix) - 1:]]
            storage_backend.delete_objects(bucket, doomed)
            removed += len(doomed)
        except StorageNoSuchBucketError:
            break  # nothing was ever stored
    return removed


def delete_cloudobjects(storage_backend: Any, cs: Any) -> int:
    """Delete the cloud objects ``cs`` (one or a list) from ``storage_backend``; returns how many."""
    if cs is None:
        return 0
    items = list(cs) if isinstance(cs, (list, tuple, set)) else [cs]
    for co in items:
        if not all(hasattr(co, a) for a in ("backend", "bucket", "key")):
            raise InvalidInputError(f"cs takes the cloud objects put_cloudobject returned, got {type(co).__name__}")
        if co.backend != storage_backend.name:
            raise InvalidInputError(
                f"cloud object {co.key!r} lives in storage {co.backend!r}, not in this executor's "
                f"{storage_backend.name!r}: delete it with wren.Storage(backend={co.backend!r})"
            )
    by_bucket: dict[str, list[str]] = {}
    for co in items:
        by_bucket.setdefault(co.bucket, []).append(co.key)
    for bucket, keys in by_bucket.items():
        storage_backend.delete_objects(bucket, keys)
    return len(items)
