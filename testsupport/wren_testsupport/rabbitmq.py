"""A private RabbitMQ node on 127.0.0.1 for tests (Debian's ``rabbitmq-server`` package).

The node gets free ports (AMQP, Erlang distribution and its own epmd), its own data, log and
config files under a temporary directory, and a unique node name, so it clashes neither with a
system RabbitMQ nor with another test session. As root the ``/usr/sbin`` wrappers switch user,
so the real scripts under ``/usr/lib/rabbitmq/bin`` are called. Use::

    node = RabbitMQNode()
    node.start()          # about 2-4 s; raises RabbitMQUnavailable when not installed
    node.url              # amqp://guest:guest@127.0.0.1:<port>/%2F
    node.kill()           # SIGKILL the broker (connections drop), e.g. in the middle of a job
    node.stop()           # stops the node (if alive) and the epmd it started; removes the dir

or the pytest fixture factory :func:`rabbitmq_node` from a conftest.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

SCRIPTS = Path("/usr/lib/rabbitmq/bin")


class RabbitMQUnavailable(RuntimeError):
    """rabbitmq-server is not installed (CI installs it through ``.ci/run``)."""


def installed() -> bool:
    return (SCRIPTS / "rabbitmq-server").exists() and shutil.which("erl") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RabbitMQNode:
    """One private broker node. Not started by the constructor."""

    def __init__(self, start_timeout: float = 120.0):
        self.start_timeout = start_timeout
        self.amqp_port = 0
        self.dist_port = 0
        self.epmd_port = 0
        self.base: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.nodename = f"wrentest{uuid.uuid4().hex[:8]}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    def _env(self) -> dict[str, str]:
        assert self.base is not None
        b = str(self.base)
        ip_args = "-kernel inet_dist_use_interface {127,0,0,1}"
        env = dict(os.environ)
        env.update(
            HOME=b,
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_MNESIA_BASE=f"{b}/mnesia",
            RABBITMQ_LOG_BASE=f"{b}/log",
            RABBITMQ_ENABLED_PLUGINS_FILE=f"{b}/enabled_plugins",
            RABBITMQ_PID_FILE=f"{b}/rabbit.pid",
            RABBITMQ_CONFIG_FILE=f"{b}/rabbitmq",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=ip_args,
            RABBITMQ_CTL_ERL_ARGS=ip_args,
            PATH=f"{SCRIPTS}:{env.get('PATH', '')}",
        )
        return env

    def _ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SCRIPTS / "rabbitmqctl"), *args], env=self._env(), capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> RabbitMQNode:
        if not installed():
            raise RabbitMQUnavailable(
                "rabbitmq-server is not installed (apt-get install -y rabbitmq-server; .ci/run does it)"
            )
        self.base = Path(tempfile.mkdtemp(prefix="wren-rmq-"))
        (self.base / "log").mkdir()
        (self.base / "mnesia").mkdir()
        (self.base / "enabled_plugins").write_text("[].\n")
        self.amqp_port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\nloopback_users.guest = true\n"
        )
        out = open(self.base / "server.out", "wb")  # kept open until the child has it
        self.proc = subprocess.Popen(
            [str(SCRIPTS / "rabbitmq-server")], env=self._env(), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        out.close()
        res = self._ctl("wait", str(self.base / "rabbit.pid"), "--timeout", str(int(self.start_timeout)),
                        timeout=self.start_timeout + 10)
        if res.returncode != 0 or not self._answers():
            log = (self.base / "server.out").read_text(errors="replace")[-3000:]
            self.stop()
            raise RuntimeError(f"the private RabbitMQ node did not start: {res.stdout}{res.stderr}\n{log}")
        return self

    def _answers(self, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.amqp_port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def add_user(self, name: str, password: str, vhost: str = "/") -> None:
        """Add a user with every permission on ``vhost`` (reachable from loopback only)."""
        for args in (("add_user", name, password), ("set_permissions", "-p", vhost, name, ".*", ".*", ".*")):
            res = self._ctl(*args)
            if res.returncode != 0 and "already exists" not in res.stdout + res.stderr:
                raise RuntimeError(f"rabbitmqctl {args[0]} failed: {res.stderr.strip() or res.stdout.strip()}")

    def broker_pid(self) -> int | None:
        if self.base is None:
            return None
        try:
            return int((self.base / "rabbit.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL the broker: every client connection drops at once."""
        pid = self.broker_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the port is closed
            try:
                with socket.create_connection(("127.0.0.1", self.amqp_port), timeout=0.5):
                    pass
            except OSError:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the node (if alive), the epmd it started, and remove its directory."""
        if self.base is None:
            return
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._ctl("stop", str(self.base / "rabbit.pid"), timeout=60)
            except subprocess.TimeoutExpired:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.epmd_port:  # the node started its own epmd on this port: end it
            env = self._env()
            subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], env=env, capture_output=True, timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None
        self.proc = None


def rabbitmq_node() -> Iterator[RabbitMQNode]:
    """Generator for a pytest fixture: yields a started node (skips when not installed)."""
    import pytest

    node = RabbitMQNode()
    try:
        node.start()
    except RabbitMQUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield node
    finally:
        node.stop()
