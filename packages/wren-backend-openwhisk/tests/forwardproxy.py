"""A forward HTTP proxy on 127.0.0.1 for tests: relays absolute-URL requests (plain HTTP) and
tunnels ``CONNECT host:port`` (HTTPS), recording what it was asked and the
``Proxy-Authorization`` headers it got."""
from __future__ import annotations

import http.client
import select
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RecordingProxy:
    def __init__(self) -> None:
        #: (method, URL or host:port) of every request, in order
        self.seen: list[tuple[str, str]] = []
        #: the Proxy-Authorization header of every request (None when absent)
        self.auth: list[str | None] = []
        seen, auth = self.seen, self.auth

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *a: Any) -> None:
                pass

            def _relay(self) -> None:
                seen.append((self.command, self.path))
                auth.append(self.headers.get("Proxy-Authorization"))
                target = urllib.parse.urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-connection", "connection", "proxy-authorization")}
                conn.request(self.command, urllib.parse.urlunsplit(("", "", target.path, target.query, "")), body, headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.getheader("Content-Type") or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _relay  # noqa: N815

            def do_CONNECT(self) -> None:  # noqa: N802
                seen.append(("CONNECT", self.path))
                auth.append(self.headers.get("Proxy-Authorization"))
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((host, int(port)), timeout=30)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                _pipe(self.connection, upstream)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    try:
        while True:
            readable, _, _ = select.select([a, b], [], [], 30)
            if not readable:
                return
            for src in readable:
                data = src.recv(65536)
                if not data:
                    return
                (b if src is a else a).sendall(data)
    except OSError:
        return
    finally:
        b.close()
