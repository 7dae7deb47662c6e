"""A Docker engine for tests: the one the environment offers, or a private ``dockerd``.

Order of preference:

1. ``DOCKER_HOST`` (when set) or ``/var/run/docker.sock`` answers ``GET /_ping``: use it, and
   never stop it;
2. ``dockerd`` is installed (``apt-get install docker.io``; root needed): start a private one
   with the flags from SERVICES.md (no bridge, no iptables, no forwarding; containers use the
   host network), its data root in a cached folder so images survive between sessions, and
   stop it with SIGTERM at the end;
3. otherwise the engine is :class:`Unavailable`, a falsy value carrying the reason, so tests
   skip visibly.

From a package's ``conftest.py``::

    from wren_testsupport.docker_engine import docker_engine_fixture
    docker_engine = docker_engine_fixture()          # session scope; skips with the reason

    def test_x(docker_engine):
        client = docker_engine.client()               # docker.DockerClient (SDK needed)

While the fixture is active, ``DOCKER_HOST`` points at the engine so the SDK's ``from_env()``,
the ``docker`` CLI and wren's docker backend (``docker_host: None``) find it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import http.client
import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger("wren_testsupport.docker")

DEFAULT_SOCKET = "/var/run/docker.sock"
DOCKERD_FLAGS = (
    "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
)


def cache_dir() -> pathlib.Path:
    """Where the private engine's data root (and the base image's rootfs tarball) are kept
    between sessions: ``$WREN_TEST_DOCKER_CACHE``, else ``/var/cache/wren-test-docker`` when
    writable, else ``~/.cache/wren-test-docker``."""
    named = os.environ.get("WREN_TEST_DOCKER_CACHE")
    if named:
        path = pathlib.Path(named)
    else:
        path = pathlib.Path("/var/cache/wren-test-docker")
        try:
            path.mkdir(parents=True, exist_ok=True)
            if not os.access(path, os.W_OK):
                raise PermissionError(path)
        except OSError:
            path = pathlib.Path.home() / ".cache" / "wren-test-docker"
    path.mkdir(parents=True, exist_ok=True)
    return path


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def ping(host: str, timeout: float = 2.0) -> bool:
    """True when the engine at ``host`` (``unix://...`` or ``tcp://...`` without TLS) answers."""
    url = urlparse(host)
    try:
        if url.scheme == "unix":
            if not os.path.exists(url.path):
                return False
            conn: http.client.HTTPConnection = _UnixHTTPConnection(url.path, timeout)
        elif url.scheme in ("tcp", "http"):
            conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 2375, timeout=timeout)
        else:  # ssh://, https: let the SDK decide
            return _sdk_ping(host)
        conn.request("GET", "/_ping")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def _sdk_ping(host: str) -> bool:
    try:
        import docker

        return bool(docker.DockerClient(base_url=host, timeout=5).ping())
    except Exception:
        return False


@dataclasses.dataclass
class DockerEngine:
    """A reachable engine. ``private`` engines were started by us and are stopped by us."""

    host: str
    private: bool = False
    data_root: str | None = None
    log_path: str | None = None
    pid: int | None = None
    _workdir: str | None = None
    _lock_fd: int | None = None

    def __bool__(self) -> bool:
        return True

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host}

    def client(self, **kwargs: Any) -> Any:
        """A ``docker.DockerClient`` for this engine (needs ``pip install docker``)."""
        import docker

        kwargs.setdefault("timeout", 300)
        return docker.DockerClient(base_url=self.host, **kwargs)

    def stop(self) -> None:
        """Stop a private engine (its containers killed first, then SIGTERM, SIGKILL after 30 s);
        a shared one is left alone."""
        if not self.private or self.pid is None:
            return
        _kill_all_containers(self.host)
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(self.pid):
            time.sleep(0.05)
        if _alive(self.pid):
            logger.warning("dockerd %d ignored SIGTERM; killing it", self.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.pid = None
        if self.data_root:
            with contextlib.suppress(OSError):
                (pathlib.Path(self.data_root).parent / STATE_FILE).unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._workdir:
            # dockerd leaves its network namespace bind-mounted under exec/netns
            for ns in glob.glob(os.path.join(self._workdir, "exec", "netns", "*")):
                subprocess.run(["umount", "-l", ns], capture_output=True)
            shutil.rmtree(self._workdir, ignore_errors=True)


@dataclasses.dataclass
class Unavailable:
    """No engine: falsy, with the reason for the skip message."""

    reason: str

    def __bool__(self) -> bool:
        return False


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


STATE_FILE = "dockerd.json"


def _kill_all_containers(host: str) -> None:
    """Kill the containers of a private engine so that dockerd stops at once (no 10 s grace)."""
    url = urlparse(host)
    if url.scheme != "unix":
        return
    try:
        conn = _UnixHTTPConnection(url.path, 10)
        conn.request("GET", "/containers/json")
        ids = [c["Id"] for c in json.loads(conn.getresponse().read())]
        for cid in ids:
            conn.request("DELETE", f"/containers/{cid}?force=1")
            conn.getresponse().read()
        conn.close()
    except (OSError, ValueError, KeyError):
        pass


def _adopt_orphan(state_path: pathlib.Path) -> DockerEngine | None:
    """A dockerd on the cached root whose session died (killed before it could stop it):
    adopt it when it answers, else stop it. Called with the root's lock held."""
    try:
        state = json.loads(state_path.read_text())
        pid, host = int(state["pid"]), state["host"]
    except (OSError, ValueError, KeyError):
        return None
    if not _alive(pid):
        state_path.unlink(missing_ok=True)
        return None
    if ping(host, timeout=2):
        logger.info("adopting dockerd %d left by a session that ended without stopping it", pid)
        return DockerEngine(host=host, private=True, data_root=state.get("data_root"), pid=pid,
                            _workdir=state.get("workdir"))
    DockerEngine(host=host, private=True, pid=pid).stop()
    state_path.unlink(missing_ok=True)
    return None


def _existing() -> str | None:
    host = os.environ.get("DOCKER_HOST")
    if host:
        return host if ping(host) else None
    default = f"unix://{DEFAULT_SOCKET}"
    return default if ping(default) else None


def start_private_engine(data_root: str | None = None, timeout: float = 60.0) -> DockerEngine | Unavailable:
    """Start ``dockerd`` with a private root. ``data_root=None`` uses the cached root when no
    other session holds it, else a fresh temporary one (images are then rebuilt)."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        return Unavailable("no Docker engine answers and dockerd is not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        return Unavailable("no Docker engine answers and starting dockerd needs root")
    # short paths: unix sockets (containerd's too) must stay under ~100 characters
    workdir = tempfile.mkdtemp(prefix="wren-dk-", dir="/tmp")
    lock_fd = None
    if data_root is None:
        cached = cache_dir() / "engine"
        cached.mkdir(parents=True, exist_ok=True)
        fd = os.open(cached / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock_fd = fd
            data_root = str(cached / "root")
            adopted = _adopt_orphan(cached / STATE_FILE)
            if adopted is not None:
                shutil.rmtree(workdir, ignore_errors=True)
                adopted._lock_fd = lock_fd
                return adopted
        except BlockingIOError:  # another session runs an engine on the cached root
            os.close(fd)
            data_root = os.path.join(workdir, "root")
            logger.warning("the cached engine root is in use by another session; using a fresh one")
    sock = os.path.join(workdir, "docker.sock")
    log_path = os.path.join(workdir, "dockerd.log")
    cmd = [
        dockerd, "--data-root", data_root, "--exec-root", os.path.join(workdir, "exec"),
        "--pidfile", os.path.join(workdir, "dockerd.pid"), "-H", f"unix://{sock}", *DOCKERD_FLAGS,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    engine = DockerEngine(host=f"unix://{sock}", private=True, data_root=data_root, log_path=log_path,
                          pid=proc.pid, _workdir=workdir, _lock_fd=lock_fd)
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = pathlib.Path(log_path).read_text(errors="replace")[-2000:]
            engine._workdir = None  # keep the log for the reader
            engine.stop()
            return Unavailable(f"dockerd exited with status {proc.returncode}; log {log_path}:\n{tail}")
        if ping(engine.host, timeout=1):
            if lock_fd is not None:
                state = {"pid": proc.pid, "host": engine.host, "data_root": data_root, "workdir": workdir}
                (pathlib.Path(data_root).parent / STATE_FILE).write_text(json.dumps(state))
            return engine
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    engine._workdir = None
    engine.stop()
    return Unavailable(f"dockerd did not answer within {timeout:g} s; see {log_path}")


def find_or_start_engine() -> DockerEngine | Unavailable:
    """An engine to use (see the module docstring); call ``.stop()`` when done."""
    host = _existing()
    if host is not None:
        return DockerEngine(host=host, private=False)
    if os.environ.get("DOCKER_HOST"):
        return Unavailable(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer")
    return start_private_engine()


@contextlib.contextmanager
def docker_engine() -> Iterator[DockerEngine | Unavailable]:
    """Context manager around :func:`find_or_start_engine`; sets ``DOCKER_HOST`` inside."""
    engine = find_or_start_engine()
    if not engine:
        yield engine
        return
    saved = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = engine.host
    try:
        yield engine
    finally:
        if saved is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = saved
        engine.stop()


def docker_engine_fixture(scope: str = "session") -> Any:
    """A pytest fixture yielding a :class:`DockerEngine`; skips with the reason when none."""
    import pytest

    @pytest.fixture(scope=scope)
    def _docker_engine() -> Iterator[DockerEngine]:
        with docker_engine() as engine:
            if not engine:
                pytest.skip(f"no Docker engine: {engine.reason}")  # type: ignore[union-attr]
            yield engine  # type: ignore[misc]

    return _docker_engine
