"""Runtime metadata: read it from an image, cache it locally and in storage, check it against
the client."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wren.errors import VersionMismatchError, WrenError
from wren.version import PYTHON_VERSION as _PY

_MARK = "WREN-METADATA:"
logger = logging.getLogger("wren.runtimes")


def runtimes_dir() -> Path:
    """``~/.wren/runtimes`` (created on use)."""
    path = Path.home() / ".wren" / "runtimes"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "runtime"


def metadata_command() -> list[str]:
    """A one-shot command that prints the runtime's metadata (as the entry point's
    ``GET /metadata`` answers) on one marked line of stdout."""
    code = (
        "import json; from wren.worker.runtime import runtime_metadata; "
        f"print({_MARK!r} + json.dumps(runtime_metadata()))"
    )
    return ["python3", "-c", code]


def parse_metadata_output(output: bytes | str) -> dict[str, Any]:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    for line in text.splitlines():
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK):])
    raise WrenError(f"the runtime did not print its metadata; it printed:\n{text[-2000:]}")


def image_metadata(client: Any, image: str) -> dict[str, Any]:
    """Run ``image`` once (no network, entry point replaced) and return its metadata."""
    from wren.runtimes.build import docker_sdk

    errors = docker_sdk().errors
    try:
        out = client.containers.run(image, command=metadata_command()[1:], entrypoint=[metadata_command()[0]],
                                    network_mode="none", remove=True, stdout=True, stderr=True)
    except errors.ImageNotFound:
        raise WrenError(f"runtime image {image!r} does not exist; build it with `wren runtime build {image}`") from None
    except errors.ContainerError as exc:
        raise WrenError(
            f"runtime image {image!r} cannot report its metadata (is wren-core installed in it, with "
            f"python3 on PATH?): {exc}"
        ) from None
    return parse_metadata_output(out)


#: Where runtime metadata is cached in storage (the storage's default bucket).
STORAGE_PREFIX = "wren.runtimes/"


class MetadataCache:
    """Runtime metadata kept in ``~/.wren/runtimes/<name>.json`` and, given a ``storage``, in
    its default bucket under ``wren.runtimes/<name>.json``, valid for one image id (or other
    version token: a deployed action's revision, an image digest). Another machine sharing the
    storage (a colleague's laptop, CI) finds what a first client read from the runtime without
    asking the runtime again. Storage errors are logged, never raised: it is only a cache."""

    def __init__(self, directory: Path | str | None = None, storage: Any = None):
        self.directory = Path(directory) if directory else runtimes_dir()
        self.storage = storage

    def path(self, name: str) -> Path:
        return self.directory / f"{_safe(name)}.json"

    def key(self, name: str) -> str:
        return f"{STORAGE_PREFIX}{_safe(name)}.json"

    @staticmethod
    def _valid(record: Any, token: str | None) -> bool:
        return isinstance(record, dict) and isinstance(record.get("metadata"), dict) and (
            token is None or record.get("token") == token)

    def get(self, name: str, token: str | None = None) -> dict[str, Any] | None:
        try:
            record = json.loads(self.path(name).read_text())
        except (OSError, ValueError):
            record = None
        if self._valid(record, token):
            return record["metadata"]
        if self.storage is None:
            return None
        try:
            record = json.loads(self.storage.get_object(self.storage.default_bucket, self.key(name)))
        except Exception as exc:  # noqa: BLE001 - missing, unreachable: ask the runtime instead
            logger.debug("runtime metadata %s not in storage: %s", name, exc)
            return None
        if not self._valid(record, token):
            return None
        self._write_local(name, record)
        return record["metadata"]

    def put(self, name: str, metadata: dict[str, Any], token: str | None = None) -> None:
        record = {"runtime": name, "token": token, "stored": time.time(), "metadata": metadata}
        self._write_local(name, record)
        if self.storage is not None:
            try:
                self.storage.put_object(self.storage.default_bucket, self.key(name), json.dumps(record).encode())
            except Exception as exc:  # noqa: BLE001
                logger.warning("could not cache the metadata of runtime %s in storage: %s", name, exc)

    def _write_local(self, name: str, record: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path(name).with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path(name))

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()
        if self.storage is not None:
            try:
                self.storage.delete_object(self.storage.default_bucket, self.key(name))
            except Exception as exc:  # noqa: BLE001
                logger.debug("runtime metadata %s not removed from storage: %s", name, exc)


def check_compatible(metadata: dict[str, Any], runtime: str, backend: str, fix_name: str | None = None) -> None:
    """Raise :class:`VersionMismatchError` when the runtime's Python minor version or wren
    version differs from this client's; the message names the command that fixes it."""
    from wren.runtimes.build import default_runtime_name
    from wren.version import __version__

    problems = []
    if metadata.get("python") != _PY:
        problems.append(f"Python {metadata.get('python')} (the client runs {_PY})")
    if metadata.get("wren") != __version__:
        problems.append(f"wren {metadata.get('wren')} (the client runs {__version__})")
    if problems:
        target = fix_name or default_runtime_name()
        raise VersionMismatchError(
            f"runtime {runtime!r} has {' and '.join(problems)}; functions pickled here cannot run "
            f"there. Build a matching runtime with `wren runtime build {target} -b {backend}` and "
            f"use it (runtime: {target}), or run the client with the runtime's versions"
        )


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def runtime_lock(name: str, timeout: float | None = 1800.0) -> Iterator[None]:
    """Hold an exclusive lock named ``name`` across threads and processes of this machine
    (``~/.wren/runtimes/locks/<name>.lock``): the first holder builds or deploys, the others
    then find it done."""
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(name, threading.Lock())
    if not tlock.acquire(timeout=-1 if timeout is None else timeout):
        raise WrenError(f"timed out waiting for the lock on runtime {name!r}")
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: the thread lock only
            yield
            return
        lock_dir = runtimes_dir() / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_dir / f"{_safe(name)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            delay = 0.05
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        raise WrenError(
                            f"timed out after {timeout:g} s waiting for another process building or "
                            f"deploying runtime {name!r} (lock {lock_dir / (_safe(name) + '.lock')})"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 1.5, 1.0)
            yield
        finally:
            os.close(fd)
    finally:
        tlock.release()
