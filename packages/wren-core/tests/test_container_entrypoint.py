"""The container entry point (``python -m wren.worker``) behind a minimal HTTP compute backend.

This drives the paths cloud backends use: the invoker with max_workers, status records in
storage found by the storage monitor, and calls supervised in child processes (timeouts, dead
processes). The backend here is a test plugin registered for these tests only.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from typing import Any, ClassVar

import pytest

import wren
from wren import plugins
from wren.compute.base import ComputeBackend
from wren.errors import InvocationError
from wren.testing import ComputeBackendConformance
from wren.worker import protocol


@dataclasses.dataclass
class HttpTestConfig:
    url: str = ""


class HttpTestBackend(ComputeBackend):
    name: ClassVar[str] = "httptest"
    config_class: ClassVar[type] = HttpTestConfig
    runs_locally: ClassVar[bool] = True
    invocations: ClassVar[int] = 0

    def invoke(self, job, calls, channel):
        for call in calls:
            body = protocol.dumps({"job": job, "calls": [call]})
            req = urllib.request.Request(self.config.url + "/", data=body, headers={"Content-Type": "application/json"})
            type(self).invocations += 1
            try:
                with urllib.request.urlopen(req, timeout=job["timeout"] + 30) as resp:
                    json.loads(resp.read())
            except OSError as exc:
                raise InvocationError(f"cannot reach the test worker at {self.config.url}: {exc}") from exc


class HttpStreamBackend(ComputeBackend):
    """Posts the calls of each job in one request with ``"stream_status": true`` and delivers
    the records as they come (no cap of its own: for small jobs only)."""

    name: ClassVar[str] = "httpstream"
    config_class: ClassVar[type] = HttpTestConfig
    runs_locally: ClassVar[bool] = True
    delivers_results: ClassVar[bool] = True
    manages_concurrency: ClassVar[bool] = True
    payloads: ClassVar[list[dict]] = []

    def invoke(self, job, calls, channel):
        body = protocol.dumps({"job": job, "calls": list(calls), "stream_status": True})
        type(self).payloads.append(json.loads(body))
        threading.Thread(target=self._read, args=(body, job, calls, channel), daemon=True).start()

    def _read(self, body, job, calls, channel):
        pending = {c.call_id for c in calls}
        url = urllib.parse.urlsplit(self.config.url)
        try:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=job.timeout + 30)
            conn.request("POST", "/", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("Content-Type") == "application/x-ndjson"
            while pending:
                line = resp.readline()
                if not line:
                    break
                status = protocol.loads_line(line)
                pending.discard(status["call_id"])
                channel.deliver(status)
            conn.close()
        except Exception as exc:
            for call_id in pending:
                channel.failed(job.job_key, call_id, exc)
            return
        for call_id in pending:
            channel.failed(job.job_key, call_id, InvocationError("the answer ended early"))


class _Plugin:
    @wren.hookimpl
    def wren_compute_backends(self):
        return [wren.ComputeBackendSpec("httptest", HttpTestBackend, HttpTestConfig),
                wren.ComputeBackendSpec("httpstream", HttpStreamBackend, HttpTestConfig)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_worker_server(*extra: str, **popen: Any) -> tuple[subprocess.Popen, str]:
    """Start ``python -m wren.worker`` on a free 127.0.0.1 port and wait until it answers."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wren.worker", "--host", "127.0.0.1", "--port", str(port), *extra], **popen
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return proc, url
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the worker entry point did not start") from None
            time.sleep(0.05)


@pytest.fixture(scope="module")
def worker_server():
    proc, url = start_worker_server()
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(autouse=True)
def _with_plugin():
    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(_Plugin(), name="httptest-plugin")
    with plugins.use_plugin_manager(pm):
        yield


class TestThroughTheContainerEntryPoint(ComputeBackendConformance):
    death_report_seconds = 30.0

    @pytest.fixture
    def executor_config(self, worker_server):
        return {"wren": {"backend": "httptest", "storage": "localhost", "max_workers": 8, "monitor_interval": 0.2},
                "httptest": {"url": worker_server}}


class TestStreamedThroughTheContainerEntryPoint(ComputeBackendConformance):
    death_report_seconds = 30.0

    @pytest.fixture
    def executor_config(self, worker_server):
        return {"wren": {"backend": "httpstream", "storage": "localhost", "max_workers": 8},
                "httpstream": {"url": worker_server}}


def test_streamed_statuses_come_as_calls_end_and_stay_out_of_storage(worker_server):
    cfg = {"wren": {"backend": "httpstream", "storage": "localhost", "max_workers": 8},
           "httpstream": {"url": worker_server}}
    HttpStreamBackend.payloads.clear()
    with wren.function_executor(config=cfg) as ex:
        fast, slow = ex.map(time.sleep, [0, 1.5])
        assert ex.get_result([fast, slow]) == [None, None]
        assert len(HttpStreamBackend.payloads) == 1  # both calls in one request...
        # ...and the fast one's record came while the slow one still ran
        assert fast.stats["host_status_done_tstamp"] < slow.stats["worker_end_tstamp"]
        keys = ex.storage_backend.list_keys(ex.bucket, ex.prefix + "/")
        assert any("/funcs/" in k for k in keys) and not [k for k in keys if k.endswith(".status")], keys


def test_metadata_endpoint(worker_server):
    with urllib.request.urlopen(worker_server + "/metadata") as resp:
        meta = json.loads(resp.read())
    assert meta["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert meta["wren"] == wren.__version__ and "wren" in meta["modules"]


def test_openwhisk_protocol(worker_server):
    req = urllib.request.Request(worker_server + "/init", data=b"{}", method="POST")
    with urllib.request.urlopen(req) as resp:
        assert json.loads(resp.read()) == {"ok": True}
    req = urllib.request.Request(worker_server + "/run", data=json.dumps({"value": {"wren_metadata": True}}).encode(), method="POST")
    with urllib.request.urlopen(req) as resp:
        assert "python" in json.loads(resp.read())


def test_max_workers_caps_calls_in_flight(worker_server):
    cfg = {"wren": {"backend": "httptest", "max_workers": 2}, "httptest": {"url": worker_server}}
    with wren.function_executor(config=cfg) as ex:
        res = ex.get_result(ex.map(_span, range(6)))
    intervals = sorted(res)
    for i, (start, _) in enumerate(intervals):
        overlapping = sum(1 for s, e in intervals if s <= start < e)
        assert overlapping <= 2, (i, intervals)


def _span(_):
    start = time.time()
    time.sleep(0.3)
    return (start, time.time())


def test_status_found_by_listing_not_per_call(worker_server):
    cfg = {"wren": {"backend": "httptest", "max_workers": 50, "monitor_interval": 0.5}, "httptest": {"url": worker_server}}
    with wren.function_executor(config=cfg) as ex:
        assert ex.get_result(ex.map(abs, range(-40, 0))) == list(range(40, 0, -1))
        assert ex.monitor.list_requests < 40  # one listing covers many calls


def test_tampered_function_is_refused(worker_server):
    """Someone who can write to the bucket replaces the stored function: the worker refuses it."""
    import pickle

    import cloudpickle

    cfg = {"wren": {"backend": "httptest"}, "httptest": {"url": worker_server}}
    with wren.function_executor(config=cfg) as ex:
        real_put = ex.storage_backend.put_object

        def attacker_put(bucket, key, body):
            real_put(bucket, key, body)
            if "/funcs/" in key:  # overwritten right after the client stored it
                evil = pickle.dumps({"func": cloudpickle.dumps(lambda *a: os.getpid()), "modules": None, "module_names": []})
                real_put(bucket, key, b"WREN1" + b"\0" * 32 + evil)

        ex.storage_backend.put_object = attacker_put
        fut = ex.call_async(divmod, (7, 2))
        with pytest.raises(wren.SerializationError, match="signature does not match"):
            ex.get_result(fut)


# -- the pool's size inside a container ------------------------------------------------------

def _write(base, files):
    for rel, text in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("layout, expected_cpus, expected_mem, expected_pool", [
    # cgroup v2 in a container's cgroup namespace: the limits at the root
    ({"cgroup.controllers": "cpu memory", "cpu.max": "50000 100000", "memory.max": str(256 << 20)}, 0.5, 256 << 20, 1),
    ({"cgroup.controllers": "cpu memory", "cpu.max": "max 100000", "memory.max": "max"}, None, None, 8),
    ({"cgroup.controllers": "cpu memory", "cpu.max": "300000 100000", "memory.max": str(2 << 30)}, 3.0, 2 << 30, 3),
    ({"cgroup.controllers": "cpu memory", "cpu.max": "max 100000", "memory.max": str(1 << 30)}, None, 1 << 30, 8),
    ({"cgroup.controllers": "cpu memory", "cpu.max": "max 100000", "memory.max": str(512 << 20)}, None, 512 << 20, 4),
    # cgroup v1: quota -1 and a huge memory number mean no limit
    ({"cpu,cpuacct/cpu.cfs_quota_us": "150000", "cpu,cpuacct/cpu.cfs_period_us": "100000",
      "memory/memory.limit_in_bytes": str(384 << 20)}, 1.5, 384 << 20, 2),
    ({"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000",
      "memory/memory.limit_in_bytes": "9223372036854771712"}, None, None, 8),
])
def test_pool_sized_by_the_containers_cpu_quota_and_memory(tmp_path, monkeypatch, layout, expected_cpus,
                                                           expected_mem, expected_pool):
    from wren.worker import supervisor

    root = tmp_path / "cgroup"
    _write(root, layout)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/\n" if "cgroup.controllers" in layout else "4:memory:/\n3:cpu,cpuacct:/\n")
    monkeypatch.delenv("WREN_WORKER_CONCURRENCY", raising=False)
    monkeypatch.setattr(supervisor.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert supervisor.container_limits(str(root), str(proc)) == (expected_cpus, expected_mem)
    assert supervisor.pool_size(str(root), str(proc)) == expected_pool
    monkeypatch.setenv("WREN_WORKER_CONCURRENCY", "5")
    assert supervisor.pool_size(str(root), str(proc)) == 5


def test_pool_size_takes_the_smallest_limit_of_the_cgroup_and_its_ancestors(tmp_path, monkeypatch):
    """Outside a cgroup namespace the process's own cgroup is a sub-folder, and a limit set on a
    parent (a Kubernetes pod's cgroup above its container's) applies too."""
    from wren.worker import supervisor

    root = tmp_path / "cgroup"
    _write(root, {"cgroup.controllers": "cpu memory",
                  "kubepods/pod1/cpu.max": "100000 100000", "kubepods/pod1/memory.max": "max",
                  "kubepods/pod1/ctr/cpu.max": "max 100000", "kubepods/pod1/ctr/memory.max": str(200 << 20)})
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/kubepods/pod1/ctr\n")
    monkeypatch.delenv("WREN_WORKER_CONCURRENCY", raising=False)
    monkeypatch.setattr(supervisor.os, "sched_getaffinity", lambda pid: set(range(4)))
    assert supervisor.container_limits(str(root), str(proc)) == (1.0, 200 << 20)
    assert supervisor.pool_size(str(root), str(proc)) == 1


def test_pool_size_on_this_machine_is_within_its_cpus():
    from wren.worker import supervisor

    assert 1 <= supervisor.pool_size() <= (os.cpu_count() or 1)
