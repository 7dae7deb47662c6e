"""RabbitMQ push monitoring against a real private broker (``rabbitmq-server``, see testsupport).

Calls run through an HTTP test backend whose worker is the real container entry point
(``python -m wren.worker``): status records go to storage and events to the broker, as on a
cloud backend (the localhost pool's pipes would bypass monitoring).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import pytest

import wren
from wren import plugins, serialize
from wren.compute.base import ComputeBackend
from wren.errors import ConfigError, InvocationError
from wren.worker import protocol

pika = pytest.importorskip("pika", reason="pika is not installed: pip install 'wren-core[rabbitmq]'")

try:
    from wren_testsupport.rabbitmq import RabbitMQNode, RabbitMQUnavailable
except ImportError:  # run outside nox: testsupport/ is at the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "testsupport"))
    from wren_testsupport.rabbitmq import RabbitMQNode, RabbitMQUnavailable

from wren.monitors.rabbitmq import RabbitMQConfig, RabbitMQPublisher, mask_url, scrub  # noqa: E402

SECRET_PW = "S3cr3t-pw_for-wren"


# -- a compute backend whose calls run in `python -m wren.worker` ---------------------------------

@dataclasses.dataclass
class HttpTestConfig:
    url: str = ""


class HttpTestBackend(ComputeBackend):
    name: ClassVar[str] = "httptest"
    config_class: ClassVar[type] = HttpTestConfig
    runs_locally: ClassVar[bool] = True

    def invoke(self, job, calls, channel):
        for call in calls:
            body = protocol.dumps({"job": job, "calls": [call]})
            req = urllib.request.Request(self.config.url + "/", data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=job["timeout"] + 30) as resp:
                    json.loads(resp.read())
            except OSError as exc:
                raise InvocationError(f"cannot reach the test worker at {self.config.url}: {exc}") from exc


class RuntimeThreadBackend(ComputeBackend):
    """Runs each call with the real worker runtime in a thread of this process (the invoker's
    max_workers threads): status to storage, events to the broker, nothing through pipes."""

    name: ClassVar[str] = "runtimethreads"
    runs_locally: ClassVar[bool] = True

    def invoke(self, job, calls, channel):
        from wren.worker.runtime import get_runtime

        for call in calls:
            get_runtime().run(job, call, write_status=True)


class _Plugin:
    @wren.hookimpl
    def wren_compute_backends(self):
        return [wren.ComputeBackendSpec("httptest", HttpTestBackend, HttpTestConfig),
                wren.ComputeBackendSpec("runtimethreads", RuntimeThreadBackend, None)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def worker_server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wren.worker", "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the worker entry point did not start")
            time.sleep(0.05)
    yield url, log
    proc.terminate()
    proc.wait(10)


def _start_node() -> RabbitMQNode:
    node = RabbitMQNode()
    try:
        node.start()
    except RabbitMQUnavailable as exc:
        pytest.skip(str(exc))
    return node


@pytest.fixture(scope="module")
def broker():
    node = _start_node()
    yield node
    node.stop()


@pytest.fixture(autouse=True)
def _with_plugin():
    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(_Plugin(), name="httptest-plugin")
    with plugins.use_plugin_manager(pm):
        yield


def _config(worker_url: str | None, monitoring: str, amqp_url: str | None = None, **rabbit: Any) -> dict[str, Any]:
    """Calls through the container entry point at ``worker_url``, else in runtime threads."""
    cfg: dict[str, Any] = {
        "wren": {"backend": "httptest" if worker_url else "runtimethreads", "storage": "localhost",
                 "max_workers": 16, "monitoring": monitoring, "monitor_interval": 0.5},
    }
    if worker_url:
        cfg["httptest"] = {"url": worker_url}
    if amqp_url is not None:
        cfg["rabbitmq"] = {"amqp_url": amqp_url, **rabbit}
    return cfg


class _Counting:
    """Counts the client's storage requests (list and get) made through one backend object."""

    def __init__(self, storage: Any):
        self.lists = self.gets = 0
        list_keys, get_object = storage.list_keys, storage.get_object

        def counted_list(*a: Any, **k: Any) -> Any:
            self.lists += 1
            return list_keys(*a, **k)

        def counted_get(*a: Any, **k: Any) -> Any:
            self.gets += 1
            return get_object(*a, **k)

        storage.list_keys, storage.get_object = counted_list, counted_get


def _queue_exists(url: str, name: str) -> bool:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if conn.is_open:
            conn.close()


def _double(x):
    return 2 * x


def _slow(x):
    time.sleep(0.2)
    return x + 1


# -- tests ----------------------------------------------------------------------------------------

def test_500_calls_need_no_storage_listing(broker):
    url = None
    n = 500
    figures = {}
    for monitoring in ("storage", "rabbitmq"):
        cfg = _config(url, monitoring, broker.url)
        with wren.function_executor(config=cfg) as ex:
            counter = _Counting(ex.storage_backend)
            t0 = time.monotonic()
            fs = ex.map(_double, range(n))
            assert ex.get_result(fs) == [2 * i for i in range(n)]
            figures[monitoring] = {"seconds": round(time.monotonic() - t0, 2), "lists": counter.lists,
                                   "gets": counter.gets, "monitor_lists": ex.monitor.list_requests}
            if monitoring == "rabbitmq":
                mon = ex.monitor
                assert mon.state == "up"
                assert mon.events_received == 2 * n  # start and finish of every call
                assert all("host_running_tstamp" in f.stats for f in fs)  # start events mark running
                queue = mon.queue
        if monitoring == "rabbitmq":
            assert not _queue_exists(broker.url, queue), "the executor's queue outlived it"
    print(f"\n500-call map: {figures}")
    assert figures["storage"]["lists"] > 0
    assert figures["rabbitmq"]["lists"] <= 1  # a safety check may list once on a slow machine
    assert figures["rabbitmq"]["gets"] == 0  # results arrive inline in the signed finish events


def test_unreachable_broker_falls_back_to_storage(caplog):
    url = None
    amqp = f"amqp://wren:{SECRET_PW}@127.0.0.1:{_free_port()}/%2F"
    with caplog.at_level(logging.DEBUG):
        with wren.function_executor(config=_config(url, "rabbitmq", amqp)) as ex:
            assert ex.get_result(ex.map(_double, range(20))) == [2 * i for i in range(20)]
            assert ex.monitor.state == "down"
            assert ex.monitor.list_requests > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("unreachable" in w and "falling back to storage polling" in w for w in warnings), warnings
    assert any("wren:****@127.0.0.1" in w for w in warnings), warnings
    assert SECRET_PW not in caplog.text


def test_broker_killed_mid_job_loses_no_result(caplog):
    url = None
    node = _start_node()
    try:
        with wren.function_executor(config=_config(url, "rabbitmq", node.url)) as ex:
            fs = ex.map(_slow, range(150))
            done, not_done = ex.wait(fs, return_when=wren.ANY_COMPLETED)
            assert ex.monitor.state == "up" and not_done
            node.kill()
            assert ex.get_result(fs) == [i + 1 for i in range(150)]
            assert ex.monitor.state == "down"
            assert ex.monitor.list_requests > 0
    finally:
        node.stop()
    assert any("lost the RabbitMQ connection" in r.getMessage() for r in caplog.records)


def test_credentials_never_logged(broker, worker_server, caplog):
    url, worker_log = worker_server
    broker.add_user("wren", SECRET_PW)
    good = f"amqp://wren:{SECRET_PW}@127.0.0.1:{broker.amqp_port}/%2F"
    bad = f"amqp://wren:{SECRET_PW}-wrong@127.0.0.1:{broker.amqp_port}/%2F"
    before = worker_log.read_bytes()
    with caplog.at_level(logging.DEBUG):
        with wren.function_executor(config=_config(url, "rabbitmq", good)) as ex:
            assert ex.get_result(ex.map(_double, range(6))) == [2 * i for i in range(6)]
            assert ex.monitor.state == "up" and ex.monitor.events_received == 12
            assert SECRET_PW not in repr(ex.monitor.config)
        with wren.function_executor(config=_config(url, "rabbitmq", bad)) as ex:  # refused login
            assert ex.get_result(ex.map(_double, range(3))) == [2 * i for i in range(3)]
            assert ex.monitor.state == "down"
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    assert SECRET_PW not in caplog.text
    assert SECRET_PW.encode() not in worker_log.read_bytes()[len(before):]
    with pytest.raises(ConfigError) as err:
        wren.function_executor(config=_config(url, "rabbitmq", f"http://wren:{SECRET_PW}@host/"))
    assert SECRET_PW not in str(err.value) and "amqp://" in str(err.value)
    with pytest.raises(ConfigError, match="amqp_url"):
        wren.function_executor(config=_config(url, "rabbitmq"))


def test_localhost_pool_with_rabbitmq(broker):
    """The localhost pool's long-lived workers publish too (one connection each, reused)."""
    cfg = {"wren": {"monitoring": "rabbitmq", "monitor_interval": 0.5}, "rabbitmq": {"amqp_url": broker.url},
           "localhost": {"worker_processes": 2}}
    with wren.function_executor(config=cfg) as ex:
        counter = _Counting(ex.storage_backend)
        assert ex.get_result(ex.map(_double, range(60))) == [2 * i for i in range(60)]
        # the pool's pipes deliver the statuses too, and may win the race with the events
        deadline = time.monotonic() + 20
        while ex.monitor.events_received < 120 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ex.monitor.events_received == 120 and counter.lists == 0 and counter.gets == 0


def test_publisher_reuses_one_connection_and_never_raises(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    secret = os.urandom(32)
    from wren.records import Job

    job = Job(executor_id="ex", job_id="M000", job_key="ex/M000", prefix="wren.jobs/ex/M000", bucket="b",
              storage={"name": "localhost", "config": {}}, func_key="f", secret=secret.hex())
    pub = RabbitMQPublisher({"monitor": "rabbitmq", "amqp_url": broker.url, "queue": queue})
    first = None
    for i in range(3):
        status = {"job_key": "ex/M000", "call_id": f"{i:05d}", "success": True}
        pub.publish(job, "start", {"job_key": "ex/M000", "call_id": f"{i:05d}"})
        pub.publish(job, "finish", status)
        first = first or pub._conn
        assert pub._conn is first  # one connection, reused
    got = []
    for _ in range(6):
        method, props, body = ch.basic_get(queue, auto_ack=True)
        got.append((props.type, props.headers["call_id"], body))
    assert [g[:2] for g in got] == [(e, f"{i:05d}") for i in range(3) for e in ("start", "finish")]
    rec = pickle.loads(serialize.verify(secret, got[1][2], "a status event", "wren.jobs/ex/M000/00000.status"))
    assert rec["call_id"] == "00000" and rec["success"]
    conn.close()
    pub.close()
    # a broker that cannot be reached only logs, and is not retried before the back-off
    dead = RabbitMQPublisher({"monitor": "rabbitmq", "amqp_url": f"amqp://u:{SECRET_PW}@127.0.0.1:{_free_port()}/",
                              "queue": "q", "connection_timeout": 2})
    t0 = time.monotonic()
    for _ in range(20):
        dead.publish(job, "start", {"call_id": "00000"})
    assert time.monotonic() - t0 < 2 and dead._failures == 1


def test_masking():
    assert mask_url("amqp://u:p%40ss@h:5672/v") == "amqp://u:****@h:5672/v"
    assert mask_url("amqps://h/v") == "amqps://h/v"
    url = f"amqp://u:{SECRET_PW}@h/"
    assert SECRET_PW not in scrub(f"failed for {url} ({SECRET_PW})", url)
    assert SECRET_PW not in repr(RabbitMQConfig(amqp_url=url))
