"""The dispatcher against a scripted HTTP server: retries with backoff on 429/502/503/504,
clear errors for unreachable services and lost connections, and many requests in flight on
one thread."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from wren.errors import InvocationError, WorkerDiedError
from wren_backend_knative import Dispatcher

from k8s_standin import BigBacklogServer


class Scripted:
    """Answers ``POST /`` from a list of (status, delay) steps, then 200 with the summary."""

    def __init__(self):
        self.steps: list[tuple[int | str, float]] = []
        self.hits = 0
        self.lock = threading.Lock()
        self.delay = 0.0
        script = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with script.lock:
                    script.hits += 1
                    step = script.steps.pop(0) if script.steps else (200, script.delay)
                code, delay = step
                time.sleep(delay)
                if code == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.connection.close()
                    return
                body = json.dumps({"job_key": "j", "calls": [{"call_id": "00000", "ok": True}]} if code == 200
                                  else {"error": f"status {code}"}).encode()
                self.send_response(code)
                if code == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = BigBacklogServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/"


@pytest.fixture
def server():
    s = Scripted()
    yield s
    s.server.shutdown()
    s.server.server_close()


@pytest.fixture
def dispatcher():
    d = Dispatcher(connections=1000, retry_timeout=5, backoff_base=0.01, backoff_max=0.1, connect_timeout=2)
    yield d
    d.close()


def post(d, url, timeout=10.0):
    box = {}
    done = threading.Event()

    def cb(err, answer):
        box.update(err=err, answer=answer)
        done.set()

    d.post(url, b"{}", timeout=timeout, on_done=cb, what="call 00000 of job j")
    assert done.wait(30)
    return box


def test_cold_start_statuses_are_retried(server, dispatcher):
    server.steps = [(503, 0), (429, 0), (502, 0), (504, 0)]
    box = post(dispatcher, server.url)
    assert box["err"] is None and box["answer"]["calls"][0]["ok"]
    assert server.hits == 5 and dispatcher.stats["retried"] == 4


def test_retries_stop_at_retry_timeout_with_a_clear_error(server):
    d = Dispatcher(retry_timeout=0.5, backoff_base=0.01, backoff_max=0.05)
    server.steps = [(503, 0)] * 10_000
    t = time.monotonic()
    box = post(d, server.url)
    d.close()
    assert isinstance(box["err"], InvocationError) and time.monotonic() - t < 3
    assert "within 0.5 s" in str(box["err"]) and "HTTP 503" in str(box["err"]) and "call 00000 of job j" in str(box["err"])


def test_other_errors_fail_at_once(server, dispatcher):
    server.steps = [(400, 0)]
    box = post(dispatcher, server.url)
    assert isinstance(box["err"], InvocationError) and "HTTP 400" in str(box["err"]) and server.hits == 1


def test_unreachable_service(dispatcher):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there once closed
    d = Dispatcher(retry_timeout=0.5, backoff_base=0.01, backoff_max=0.05)
    box = post(d, f"http://127.0.0.1:{port}/")
    d.close()
    assert isinstance(box["err"], InvocationError) and "cannot connect" in str(box["err"])


def test_lost_connection_is_a_dead_worker(server, dispatcher):
    server.steps = [("drop", 0.8)]
    box = post(dispatcher, server.url)
    assert isinstance(box["err"], WorkerDiedError) and "connection" in str(box["err"])


def test_no_answer_within_the_timeout_is_a_dead_worker(server, dispatcher):
    server.steps = [(200, 3)]
    box = post(dispatcher, server.url, timeout=0.5)
    assert isinstance(box["err"], WorkerDiedError) and "did not answer within 0.5 s" in str(box["err"])


def test_many_requests_in_flight_on_one_thread(server, dispatcher):
    """800 requests that each take 1 s: all in flight at once, on the dispatcher's one thread."""
    server.delay = 1.0
    n = 800
    done = threading.Semaphore(0)
    errors = []

    def cb(err, answer):
        if err:
            errors.append(err)
        done.release()

    def ours():
        return [t for t in threading.enumerate() if "process_request_thread" not in t.name and t.daemon]

    before = len(ours())
    t = time.monotonic()
    for _ in range(n):
        dispatcher.post(server.url, b"{}", timeout=120, on_done=cb)
    time.sleep(0.5)
    during = len(ours())
    for _ in range(n):
        assert done.acquire(timeout=150)
    elapsed = time.monotonic() - t
    assert not errors
    assert dispatcher.stats["peak_in_flight"] >= n * 0.9
    assert dispatcher.threads == 1 and during - before <= 3, (before, during)
    assert elapsed < 20, elapsed  # 800 x 1 s in parallel, not in series
