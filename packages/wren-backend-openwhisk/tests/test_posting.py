"""How invocations are posted (``wren_backend_openwhisk.posting``): kept-alive connections that
are reopened when the server closed them, TLS with the same certificate checks as the rest of
the client, HTTPS through a proxy's CONNECT tunnel, errors without credentials."""
from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme

from conftest import API_KEY
from emulator import NoopRunner, OpenWhiskEmulator
from forwardproxy import RecordingProxy
from wren_backend_openwhisk import OpenWhiskClient
from wren_backend_openwhisk.client import BasicAuth, OpenWhiskError


PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
              "no_proxy")
CA_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture
def clean_env(monkeypatch):
    """No proxy and no CA bundle from the environment (this machine's may set them)."""
    for var in PROXY_VARS + CA_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def plain_emulator():
    """An emulator whose activations run nothing (the session's would start action processes
    for these throwaway actions)."""
    with OpenWhiskEmulator({API_KEY: "guest"}, runner=NoopRunner()) as emu:
        yield emu


@pytest.fixture(scope="module")
def tls_emulator(tmp_path_factory):
    """An emulator serving HTTPS with a certificate for 127.0.0.1 from a test CA, and the CA's
    bundle file."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with OpenWhiskEmulator({API_KEY: "guest"}, runner=NoopRunner(), tls=context) as emu:
        client = OpenWhiskClient(emu.url, "guest", BasicAuth(API_KEY), insecure=True)
        client.put_action("posting-test", "some/image:1", 128, 10)
        client.close()
        yield emu, str(bundle)


def _ids(client: OpenWhiskClient, n: int) -> list[str]:
    return [client.invoke("posting-test", json.dumps({"i": i}).encode()) for i in range(n)]


# -- kept-alive connections -------------------------------------------------------------------

class _OneShotServer:
    """Answers each POST with 202 and an activation id, then closes the connection without
    saying so (no ``Connection: close``), as a server whose idle keep-alive timeout passed;
    ``drop_first`` connections are closed on the first request without an answer."""

    def __init__(self, drop_first: int = 0):
        self.connections = 0
        self.requests = 0
        self.closed = threading.Semaphore(0)
        outer = self
        drops = [drop_first]

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                outer.connections += 1

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                self.close_connection = True
                if drops[0] > 0:
                    drops[0] -= 1
                    return
                body = json.dumps({"activationId": uuid.uuid4().hex}).encode()
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def shutdown_request(self, request):
                super().shutdown_request(request)
                outer.closed.release()  # the server's side is closed: the client can see it

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_connection_the_server_closed_while_idle_is_reopened_before_use(clean_env):
    server = _OneShotServer()
    client = OpenWhiskClient(server.url, "guest", BasicAuth(API_KEY), retries=1)
    try:
        for _ in range(3):
            assert client.invoke("posting-test", b'{"x":1}')
            assert server.closed.acquire(timeout=30)
    finally:
        client.close()
        server.close()
    # no request was lost to the closed connection: none failed, none was sent twice
    assert client.stats["network_errors"] == 0 and server.requests == 3
    assert server.connections == 3


def test_a_request_the_server_dropped_is_retried_on_a_new_connection(clean_env):
    server = _OneShotServer(drop_first=2)
    client = OpenWhiskClient(server.url, "guest", BasicAuth(API_KEY), retries=3, backoff_base=0.01, backoff_max=0.02)
    try:
        assert client.invoke("posting-test", b'{"x":1}')
    finally:
        client.close()
        server.close()
    assert client.stats["network_errors"] == 2 and server.requests == 3 and server.connections == 3


def test_connections_are_kept_alive_one_per_posting_thread(plain_emulator, clean_env):
    """Many invocations from a few threads open one connection per thread."""
    client = OpenWhiskClient(plain_emulator.url, "guest", BasicAuth(API_KEY))
    client.put_action("posting-test", "some/image:1", 128, 10)
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.extend(_ids(client, 20))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    poster = client._poster
    client.delete_action("posting-test")
    client.close()
    assert len(set(ids)) == 80
    assert poster is not None and len(poster._connections) == 4
    assert all(c.sock is None for c in poster._connections)  # closed with the client


# -- TLS ----------------------------------------------------------------------------------------

def test_invocations_over_tls_check_the_certificate_like_the_rest_of_the_client(tls_emulator, clean_env):
    emu, bundle = tls_emulator
    # the test CA is not trusted by default: refused, with the reason and without the key
    client = OpenWhiskClient(emu.url, "guest", BasicAuth(API_KEY), retries=1)
    with pytest.raises(OpenWhiskError) as info:
        client.invoke("posting-test", b'{"x":1}')
    client.close()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) and emu.url in str(info.value)
    assert API_KEY.split(":")[1] not in str(info.value)

    # REQUESTS_CA_BUNDLE (read when the client is made) is what both paths trust
    clean_env.setenv("REQUESTS_CA_BUNDLE", bundle)
    client = OpenWhiskClient(emu.url, "guest", BasicAuth(API_KEY), retries=1)
    clean_env.delenv("REQUESTS_CA_BUNDLE")
    before = emu.counts["accepted"]
    connects = []
    connect = http.client.HTTPSConnection.connect
    clean_env.setattr(http.client.HTTPSConnection, "connect", lambda self: connects.append(1) or connect(self))
    assert len(set(_ids(client, 5))) == 5
    assert len(connects) == 1  # one TLS connection, kept alive
    assert client.get_action("posting-test")["name"] == "posting-test"  # through requests
    client.close()
    assert emu.counts["accepted"] == before + 5

    # insecure: the certificate is not checked
    client = OpenWhiskClient(emu.url, "guest", BasicAuth(API_KEY), insecure=True, retries=1)
    assert len(set(_ids(client, 2))) == 2
    client.close()


def test_https_invocations_go_through_the_proxy_tunnel_with_its_credentials(tls_emulator, clean_env):
    emu, bundle = tls_emulator
    proxy = RecordingProxy()
    try:
        clean_env.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://proxy-user:s%40cret@"))
        clean_env.setenv("REQUESTS_CA_BUNDLE", bundle)
        client = OpenWhiskClient(emu.url, "guest", BasicAuth(API_KEY), retries=1)
        before = emu.counts["accepted"]
        assert len(set(_ids(client, 3))) == 3
        assert client.get_action("posting-test") is not None  # requests tunnels too
        client.close()
        assert emu.counts["accepted"] == before + 3
        target = emu.url.removeprefix("https://")
        assert proxy.seen and all(s == ("CONNECT", target) for s in proxy.seen), proxy.seen
        expected = "Basic " + base64.b64encode(b"proxy-user:s@cret").decode()
        assert proxy.auth == [expected] * len(proxy.seen)

        # a proxy that refuses the tunnel: a clear error, without the proxy's password
        clean_env.setenv("HTTPS_PROXY", f"http://proxy-user:s%40cret@127.0.0.1:{_closed_port()}")
        client = OpenWhiskClient(emu.url, "guest", BasicAuth(API_KEY), retries=1)
        with pytest.raises(OpenWhiskError, match="cannot reach") as info:
            client.invoke("posting-test", b'{"x":1}')
        client.close()
        assert "s@cret" not in str(info.value) and "s%40cret" not in str(info.value)
    finally:
        proxy.close()


def test_plain_http_invocations_through_a_proxy_carry_its_credentials(plain_emulator, clean_env):
    proxy = RecordingProxy()
    try:
        clean_env.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://proxy-user:pw@"))
        client = OpenWhiskClient(plain_emulator.url, "guest", BasicAuth(API_KEY))
        client.put_action("posting-test", "some/image:1", 128, 10)
        assert client.invoke("posting-test", b'{"x":1}')
        client.delete_action("posting-test")
        client.close()
        posts = [i for i, (m, url) in enumerate(proxy.seen) if m == "POST"]
        assert len(posts) == 1 and proxy.seen[posts[0]][1].startswith(plain_emulator.url + "/api/v1/namespaces/guest/")
        assert proxy.auth[posts[0]] == "Basic " + base64.b64encode(b"proxy-user:pw").decode()
    finally:
        proxy.close()


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(clean_env):
    server = _OneShotServer()
    client = OpenWhiskClient(server.url, "guest", BasicAuth(API_KEY), extra_headers={"X-Namespace-Id": "a\r\nX-Evil: 1"})
    try:
        with pytest.raises(OpenWhiskError, match="X-Namespace-Id"):
            client.invoke("posting-test", b'{"x":1}')
    finally:
        client.close()
        server.close()
    assert server.requests == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
