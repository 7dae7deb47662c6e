"""API-key auth: the SDK exchanges the key at ``iam_endpoint`` and refreshes the token.

SeaweedFS does not check IAM bearer tokens, so here both sides are local stand-ins: an IAM token
service issuing short-lived tokens, and an endpoint that answers HEAD bucket with 200 only for a
current token it issued (403 otherwise).
"""
import http.server
import json
import threading
import time
import urllib.parse
import uuid

import pytest

from wren.config import parse_section
from wren.errors import StorageAuthError
from wren_storage_cos import COSConfig, COSStorage

API_KEY = "apikey-" + uuid.uuid4().hex
TTL = 2  # seconds a token lives


class World:
    def __init__(self):
        self.tokens: dict[str, float] = {}  # token -> expiry
        self.grants: list[str] = []
        self.seen_tokens: list[str] = []
        self.lock = threading.Lock()


def _serve(handler_cls):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def world():
    w = World()

    class IAM(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            grant = form.get("grant_type", [""])[0]
            ok = (grant.endswith("apikey") and form.get("apikey") == [API_KEY]) or (
                grant == "refresh_token" and form.get("refresh_token") == ["refresh-" + API_KEY[-6:]]
            )
            with w.lock:
                w.grants.append(grant)
            if not ok:
                body = json.dumps({"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found"}).encode()
                self.send_response(400)
            else:
                token = "tok-" + uuid.uuid4().hex
                with w.lock:
                    w.tokens[token] = time.time() + TTL
                body = json.dumps({
                    "access_token": token, "refresh_token": "refresh-" + API_KEY[-6:], "token_type": "Bearer",
                    "expires_in": TTL, "expiration": int(time.time() + TTL),
                }).encode()
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class COS(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_HEAD(self):
            auth = self.headers.get("Authorization", "")
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
            with w.lock:
                w.seen_tokens.append(token)
                valid = w.tokens.get(token, 0) > time.time()
            self.send_response(200 if valid else 403)
            self.send_header("Content-Length", "0")
            self.end_headers()

    iam, cos = _serve(IAM), _serve(COS)
    w.iam_url = f"http://127.0.0.1:{iam.server_address[1]}/identity/token"
    w.cos_url = f"http://127.0.0.1:{cos.server_address[1]}"
    yield w
    for s in (iam, cos):
        s.shutdown()
        s.server_close()


def storage(world, api_key=API_KEY):
    cfg = parse_section(COSConfig, "ibm_cos", {
        "endpoint": world.cos_url, "storage_bucket": "b", "api_key": api_key,
        "iam_endpoint": world.iam_url, "retries": 1,
    })
    return COSStorage(cfg)


def test_api_key_is_exchanged_and_token_refreshed(world):
    st = storage(world)
    assert world.grants == []  # nothing before first use
    assert st.bucket_exists("b")
    assert len(world.grants) == 1 and world.grants[0].endswith("apikey")
    first = world.seen_tokens[-1]
    assert st.bucket_exists("b")
    time.sleep(TTL + 0.5)  # the token expires
    assert st.bucket_exists("b")
    assert world.seen_tokens[-1] != first and world.seen_tokens[-1] in world.tokens
    assert len(world.grants) >= 2
    assert API_KEY not in "".join(world.seen_tokens)
    st.close()


def test_bad_api_key_is_an_auth_error_without_the_key(world):
    bad = "wrong-" + uuid.uuid4().hex
    st = storage(world, api_key=bad)
    with pytest.raises(StorageAuthError) as info:
        st.bucket_exists("b")
    text = str(info.value)
    assert bad not in text and "api_key" in text and world.iam_url in text
