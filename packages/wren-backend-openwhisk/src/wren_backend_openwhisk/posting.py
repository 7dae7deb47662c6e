"""Invocations posted over ``http.client``: one kept-alive connection per posting thread.

An invocation is one small POST repeated thousands of times to the same URL. Through requests
and urllib3, each cost about as much client CPU as everything else wren does per call (pool
look-ups, proxy selection, header dicts merged and validated, a response object built, headers
and body sent in two writes). Here the request line and fixed headers are worked out once per
action; a call sends its body (and the auth header, which may change) on the calling thread's
own connection, in one write, and reads the answer. The connection is reused while the server
keeps it open: one that the server closed while idle is noticed before it is used again
(as urllib3 does) and opened anew, and one that fails is dropped so that the next attempt
connects afresh.

The rest of the client (deployments, listings, reading activations) keeps using requests:
those requests are few. What requests would decide for an invocation is decided the same way,
once: the proxy for the endpoint (``HTTP(S)_PROXY``/``NO_PROXY`` read by requests when the
client was made; an ``https`` endpoint goes through an ``http://`` proxy in a CONNECT tunnel,
with the proxy's credentials from its URL as ``Proxy-Authorization``), and certificate checks
(the client's ``verify``: ``False``, a CA bundle file or folder, or ``True`` for requests' own
CA bundle). A proxy spoken to over TLS, or a SOCKS proxy, is left to requests
(:func:`make_poster` returns ``None``).
"""
from __future__ import annotations

import http.client
import json
import os
import re
import select
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

#: What a failed post raises: the connection is dropped, and the request counts as a network error.
POST_ERRORS = (OSError, http.client.HTTPException)


class Answer:
    """The parts of an HTTP answer the client reads (as on a ``requests.Response``)."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: Any, content: bytes):
        self.status_code = status_code
        self.headers = headers  # http.client.HTTPMessage: case-insensitive ``get``
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """Certificate checks as requests makes them for ``verify``."""
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    where = requests.certs.where() if verify is True else str(verify)
    if os.path.isdir(where):
        return ssl.create_default_context(capath=where)
    return ssl.create_default_context(cafile=where)


class Poster:
    """POSTs to one endpoint, on a kept-alive ``http.client`` connection per thread."""

    def __init__(self, endpoint: str, proxy: str | None, verify: bool | str, timeout: float,
                 headers: dict[str, str], adapter: HTTPAdapter):
        url = urlsplit(endpoint)
        self.https = url.scheme == "https"
        self.host = url.hostname or ""
        self.port = url.port or (443 if self.https else 80)
        self.timeout = timeout
        self.verify = verify
        netloc = url.netloc.rpartition("@")[2]
        fixed = {"Host": netloc, "Accept-Encoding": "identity", **headers}
        self._origin = f"{url.scheme}://{netloc}"
        self._proxy: tuple[str, int] | None = None
        self._tunnel_headers: dict[str, str] = {}
        #: an http endpoint through a proxy: requests carry the absolute URL (and the proxy's auth)
        self._absolute = False
        if proxy:
            purl = urlsplit(requests.utils.prepend_scheme_if_needed(proxy, "http"))
            self._proxy = (purl.hostname or "", purl.port or 80)
            proxy_headers = adapter.proxy_headers(proxy)
            if self.https:
                self._tunnel_headers = proxy_headers
            else:
                self._absolute = True
                fixed.update(proxy_headers)
        self._fixed = _header_lines(fixed)
        self._context: ssl.SSLContext | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []

    def prepare(self, path: str) -> bytes:
        """The request line and fixed headers of a POST to ``path`` (which starts with ``/``)."""
        target = self._origin + path if self._absolute else path
        if any(c in target for c in " \r\n"):
            raise ValueError(f"cannot post to {target!r}: a request target has no spaces or line breaks")
        return b"POST " + target.encode("ascii") + b" HTTP/1.1\r\n" + self._fixed

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        host, port = self._proxy or (self.host, self.port)
        if self.https:
            with self._lock:
                if self._context is None:  # loading CA certificates takes a while: once, on first use
                    self._context = ssl_context(self.verify)
            conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._context)
            if self._proxy:
                conn.set_tunnel(self.host, self.port, headers=self._tunnel_headers)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        with self._lock:
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    def post(self, head: bytes, body: bytes, headers: dict[str, str]) -> Answer:
        """Send ``head`` (from :meth:`prepare`), ``headers`` and ``body`` in one write and read
        the answer. Raises one of :data:`POST_ERRORS` when no answer came (the connection is
        then dropped)."""
        conn = getattr(self._local, "conn", None) or self._connect()
        try:
            if conn.sock is not None and _readable(conn.sock):
                conn.close()  # closed by the server while idle (or out of step): connect again
            if conn.sock is None:
                conn.connect()  # through the proxy's tunnel and TLS, as the connection says
            conn.sock.sendall(b"".join((head, _header_lines(headers), b"Content-Length: %d\r\n\r\n" % len(body),
                                        body)))
            resp = http.client.HTTPResponse(conn.sock, method="POST")
            resp.begin()
            content = resp.read()
        except BaseException:
            conn.close()
            raise
        if resp.will_close:
            conn.close()
        return Answer(resp.status, resp.msg, content)

    def close(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.close()


def _header_lines(headers: dict[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or "\r" in value or "\n" in value:
            raise ValueError(f"invalid HTTP header {name!r} (a token, and a value without line breaks)")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


#: an HTTP header name (RFC 9110 token)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _readable(sock: Any) -> bool:
    """An idle kept-alive socket with something to read was closed by the server."""
    if not hasattr(select, "poll"):  # not on Windows
        return bool(select.select([sock], [], [], 0)[0])
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def make_poster(endpoint: str, session: requests.Session, adapter: HTTPAdapter, timeout: float,
                headers: dict[str, str]) -> Poster | None:
    """A :class:`Poster` for ``endpoint`` with the session's proxies and ``verify``, or ``None``
    when the proxy is one that only requests can speak to (TLS to the proxy, SOCKS)."""
    proxy = requests.utils.select_proxy(endpoint, session.proxies)
    if proxy and urlsplit(requests.utils.prepend_scheme_if_needed(proxy, "http")).scheme != "http":
        return None
    verify = session.verify if isinstance(session.verify, (bool, str)) else True
    return Poster(endpoint, proxy, verify, timeout, headers, adapter)
