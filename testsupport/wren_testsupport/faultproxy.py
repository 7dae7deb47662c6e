"""A TCP proxy on 127.0.0.1 that injects storage faults in front of a real server (tests only).

    with FaultProxy(upstream_port) as proxy:       # proxy.port forwards to 127.0.0.1:upstream_port
        proxy.fault("slowdown", seconds=3)          # answer 503 SlowDown for 3 s
        proxy.fault("refuse", seconds=3)            # refuse connections (nothing listens) for 3 s
        proxy.fault("reset", seconds=3)             # reset connections mid-response for 3 s

Each connection is proxied byte for byte while no fault is active. ``counts`` says how many
connections each fault hit.
"""
from __future__ import annotations

import collections
import socket
import struct
import threading
import time
from typing import Any

_SLOWDOWN = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
             b"Content-Length: %d\r\n\r\n%s")
_SLOWDOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                  b"<Message>Please reduce your request rate.</Message></Error>")


class FaultProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1"):
        self.host = host
        self.upstream = (host, upstream_port)
        self.port = 0
        self._mode = "pass"
        self._until = 0.0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self.counts: collections.Counter[str] = collections.Counter()
        self._open: set[socket.socket] = set()  # proxied connections, dropped when a fault starts

    def __enter__(self) -> FaultProxy:
        self._listen()
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stopped.set()
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fault(self, mode: str, seconds: float) -> None:
        """Inject ``mode`` ('slowdown', 'refuse' or 'reset') for the next ``seconds``."""
        assert mode in ("slowdown", "refuse", "reset")
        with self._lock:
            self._mode, self._until = mode, time.monotonic() + seconds
            if mode == "refuse" and self._listener is not None:
                self._listener.close()  # connections are refused until it listens again
                self._listener = None
            doomed, self._open = self._open, set()
        for s in doomed:  # kept-alive connections would not see the fault otherwise
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            except OSError:
                pass

    def _current(self) -> str:
        with self._lock:
            if self._mode != "pass" and time.monotonic() >= self._until:
                self._mode = "pass"
            return self._mode

    def _listen(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(128)
        s.settimeout(0.2)
        self.port = s.getsockname()[1]
        self._listener = s

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                if self._current() == "refuse":
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self._listen()
                continue
            try:
                conn, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        mode = self._current()
        try:
            if mode == "slowdown":
                self.counts[mode] += 1
                conn.recv(65536)
                conn.sendall(_SLOWDOWN % (len(_SLOWDOWN_BODY), _SLOWDOWN_BODY))
                conn.close()
                return
            if mode == "reset":
                self.counts[mode] += 1
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # RST mid-response
                return
            up = socket.create_connection(self.upstream)
        except OSError:
            conn.close()
            return
        with self._lock:
            self._open.add(conn)
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
