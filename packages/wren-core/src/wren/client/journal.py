"""A local record of each executor's jobs, so a new client can reattach after a crash.

``~/.wren/executors/<executor_id>.json`` (mode 0600, in a 0700 folder) holds what is needed to
find and verify the job's results in storage: the storage prefix, the number of calls of each
job, and the executor's signing key. Storage never holds that key. The file is removed when the
executor cleans its data.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from wren.errors import InvalidInputError
from wren.future import INVOKED, ResponseFuture
from wren.keys import call_ids


def wren_home() -> Path:
    return Path(os.environ.get("WREN_HOME") or Path.home() / ".wren")


def journal_dir() -> Path:
    return wren_home() / "executors"


def logs_dir() -> Path:
    return wren_home() / "logs"


def save_logs(executor_id: str, job_id: str, calls: list[tuple[str, str]]) -> Path | None:
    """Keep what the calls of a job printed, for ``wren logs`` (``calls`` = [(call id, text)])."""
    calls = [(c, t) for c, t in calls if t]
    if not calls:
        return None
    d = logs_dir() / executor_id
    for folder in (wren_home(), logs_dir(), d):
        folder.mkdir(mode=0o700, exist_ok=True)
    path = d / f"{job_id}.log"
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        for call_id, text in calls:
            f.write(f"--- call {call_id} ---\n{text}")
            if not text.endswith("\n"):
                f.write("\n")
    return path


def _path(executor_id: str) -> Path:
    if not executor_id or "/" in executor_id or executor_id.startswith("."):
        raise InvalidInputError(f"invalid executor id {executor_id!r}")
    return journal_dir() / f"{executor_id}.json"


def write(record: dict[str, Any]) -> None:
    d = journal_dir()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(tmp, _path(record["executor_id"]))


def write_executor(executor_id: str, prefix: str, bucket: str, storage: str, backend: str, secret: bytes,
                   jobs: dict[str, dict[str, Any]]) -> None:
    """Record what a new client needs to reattach to this executor's jobs."""
    write({
        "executor_id": executor_id, "prefix": prefix, "bucket": bucket, "storage": storage, "backend": backend,
        "secret": secret.hex(), "pid": os.getpid(), "created": time.time(),
        "jobs": {m["job_id"]: {"calls": m["calls"], "kind": m["kind"]} for m in jobs.values()},
    })


def read(executor_id: str) -> dict[str, Any]:
    p = _path(executor_id)
    try:
        record: dict[str, Any] = json.loads(p.read_text())
        return record
    except FileNotFoundError:
        known = sorted(x.stem for x in journal_dir().glob("*.json")) if journal_dir().is_dir() else []
        raise InvalidInputError(
            f"no record of executor {executor_id!r} on this machine (known: {', '.join(known) or 'none'}); "
            "reattach from the machine that submitted the job"
        ) from None


def remove(executor_id: str) -> None:
    try:
        _path(executor_id).unlink()
    except FileNotFoundError:
        pass


def list_records() -> list[dict[str, Any]]:
    d = journal_dir()
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return out


def futures_of(rec: dict[str, Any], bucket: str, storage_name: str) -> list[ResponseFuture]:
    """The futures of every call of the executor recorded in ``rec``, to reattach to, checked
    against the storage of the executor that reattaches."""
    if rec["storage"] != storage_name or rec["bucket"] != bucket:
        raise InvalidInputError(
            f"executor {rec['executor_id']} kept its data in storage {rec['storage']!r} bucket {rec['bucket']!r}; "
            f"attach from an executor configured with that storage (this one uses "
            f"{storage_name!r} bucket {bucket!r})"
        )
    secret = bytes.fromhex(rec["secret"])
    futures = []
    for job_id, meta in sorted(rec["jobs"].items()):
        for call_id in call_ids(meta["calls"]):
            f = ResponseFuture(rec["executor_id"], job_id, call_id, f"{rec['prefix']}/{job_id}", rec["bucket"], meta["kind"])
            f._secret = secret
            f._mark(INVOKED)
            futures.append(f)
    return futures
