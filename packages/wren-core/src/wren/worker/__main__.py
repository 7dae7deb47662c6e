"""The container entry point of every wren runtime: ``python -m wren.worker [--port 8080]``.

It speaks the OpenWhisk action protocol (``POST /init``, ``POST /run`` with the payload in
``value``), so one image serves OpenWhisk and IBM Cloud Functions as a blackbox action, and
Knative's (``POST /`` with the payload as the body). A payload is
``wren.worker.protocol.encode({"job": job, "calls": [call, ...]})``; each call runs in a
supervised child process (see :mod:`wren.worker.supervisor`) and writes its status to storage.
``{"wren_metadata": true}`` (or ``GET /metadata``) answers with the runtime's metadata. With
``"return_status": true`` in the payload the answer carries each call's status record
(``protocol.decode(answer["statuses"])``), for a synchronous backend to pass to
``channel.deliver``. With ``"stream_status": true`` (``POST /`` only) the answer is chunked
JSON lines (``application/x-ndjson``), one status record per call sent as soon as the call
ends (``protocol.loads_line`` reads one): a backend keeping one request per batch of calls
learns of each at once. Those records go to storage only when the job asks
(``job.store_results``): the caller takes them from the answer. A payload with ``"remote_invoker"`` starts its calls instead of
running them (see :mod:`wren.worker.fanout`).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from wren.worker import protocol
from wren.worker.runtime import runtime_metadata
from wren.worker.supervisor import get_pool, run_calls, started_calls

logger = logging.getLogger("wren.worker")


def handle_payload(payload: dict[str, Any], deadline: float | None = None) -> dict[str, Any]:
    """Run what a payload asks for and return the JSON answer. ``deadline``: when the platform
    stops this activation (seconds since the epoch), if it said."""
    if payload.get("wren_metadata"):
        return runtime_metadata()
    data = protocol.decode(payload)
    job = data["job"]
    calls = data.get("calls") or ([data["call"]] if "call" in data else [])
    if not calls:
        return {"error": "the payload has no calls"}
    if data.get("remote_invoker"):
        # a remote-invoker activation: start the calls from here instead of running them
        from wren.worker.fanout import fan_out

        return fan_out(job, calls, data["remote_invoker"], deadline)
    if data.get("return_status"):
        # synchronous callers (Knative, the docker backend) get the records in the answer and
        # need no storage round trip to learn the outcome
        return {"job_key": job["job_key"], "statuses": protocol.encode(run_calls(job, calls, return_status=True))}
    return {"job_key": job["job_key"], "calls": run_calls(job, calls)}


def _deadline(value: Any) -> float | None:
    try:
        return float(value) / 1000 if value else None
    except (TypeError, ValueError):
        return None


class Handler(BaseHTTPRequestHandler):
    server_version = "wren-worker"
    # keep-alive: a platform or backend that posts many calls reuses its connection (every
    # answer has a Content-Length)
    protocol_version = "HTTP/1.1"
    # Nagle off: the body, written after the headers, would otherwise wait for the caller's
    # delayed ACK (up to 40 ms on Linux)
    disable_nagle_algorithm = True

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet unless debugging
        logger.debug(fmt, *args)

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    def do_GET(self) -> None:  # noqa: N802
        if self.path in ("/metadata", "/metadata/"):
            self._send(200, runtime_metadata())
        elif self.path in ("/healthz", "/"):
            self._send(200, {"ok": True})
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        try:
            body = self._body()
        except (ValueError, json.JSONDecodeError) as exc:
            self._send(400, {"error": f"the body is not JSON: {exc}"})
            return
        try:
            if self.path.startswith("/init"):
                self._send(200, {"ok": True})
            elif self.path.startswith("/run"):
                # OpenWhisk: action parameters arrive under "value", the time limit (epoch ms)
                # under "deadline"
                self._send(200, handle_payload(body.get("value") or {}, _deadline(body.get("deadline"))))
            elif self.path in ("/", "") and body.get("stream_status"):
                self._stream(body)
            elif self.path in ("/", ""):
                self._send(200, handle_payload(body))
            else:
                self._send(404, {"error": f"no route {self.path}"})
        except (BrokenPipeError, ConnectionResetError):
            logger.info("the caller hung up before the answer; the calls' statuses are in storage")
        except Exception as exc:  # report, never crash the server
            logger.exception("payload failed")
            self._send(500, {"error": f"{type(exc).__name__}: {exc}"})


    def _stream(self, body: dict[str, Any]) -> None:
        """Run the payload's calls and answer with their status records as they end: one JSON
        line each (``protocol.dumps_line``), in chunks of what has ended meanwhile."""
        data = protocol.decode(body)
        calls = data.get("calls") or []
        if not calls:
            self._send(400, {"error": "the payload has no calls"})
            return
        ended: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        # the records travel in the answer: in storage only when the job asks
        with started_calls(data["job"], calls, ended.put, store=False) as (channel, _):
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            left = channel.n
            try:
                while left:
                    lines = [protocol.dumps_line(ended.get())]
                    while len(lines) < left:
                        try:
                            lines.append(protocol.dumps_line(ended.get_nowait()))
                        except queue.Empty:
                            break
                    left -= len(lines)
                    chunk = b"".join(lines)
                    # one write per chunk: head, lines and tail leave in one segment
                    self.wfile.write(b"%x\r\n%b\r\n%b" % (len(chunk), chunk, b"" if left else b"0\r\n\r\n"))
            except (BrokenPipeError, ConnectionResetError):
                raise  # the caller hung up: the calls not started yet are dropped on the way out
            except Exception:  # the answer has begun: cut it short, the caller fails what is missing
                logger.exception("streaming the statuses failed")
                self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of invocations must queue, not be reset


def serve(host: str, port: int) -> None:
    server = Server((host, port), Handler)
    threading.Thread(target=get_pool, name="wren-warm-pool", daemon=True).start()  # warm before the first call
    logger.info("wren worker listening on %s:%d", host, port)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wren.worker", description="wren's container entry point")
    ap.add_argument("--host", default=os.environ.get("WREN_WORKER_HOST", "0.0.0.0"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", os.environ.get("WREN_WORKER_PORT", "8080"))))
    ap.add_argument("--log-level", default=os.environ.get("WREN_LOG_LEVEL", "WARNING"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
