"""A small client of the OpenWhisk REST API (``/api/v1``) on one pooled ``requests.Session``;
invocations are posted on kept-alive ``http.client`` connections, one per posting thread
(:mod:`wren_backend_openwhisk.posting`).

Shared by the ``openwhisk`` and ``ibm_cf`` backends; only the authentication differs (an
:class:`Auth` gives the headers of each request). Throttling (HTTP 429) is retried with jittered
exponential backoff for up to ``throttle_timeout`` seconds, 5xx answers and network errors up to
``retries`` attempts; what still fails raises an :class:`OpenWhiskError` whose message never
contains a credential.
"""
from __future__ import annotations

import base64
import functools
import json
import logging
import os
import random
import threading
import time
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter

from wren.errors import ComputeError

from wren_backend_openwhisk.posting import POST_ERRORS, Answer, Poster, make_poster

logger = logging.getLogger("wren.openwhisk")

#: Seconds the controller holds a blocking invocation before it answers 202 with the activation
#: id (``?blocking=true``: 60 s, the swagger's "max allowed timeout").
BLOCKING_WAIT = 60.0


class OpenWhiskError(ComputeError):
    """The OpenWhisk API answered with an error (or could not be reached)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class OpenWhiskAuthError(OpenWhiskError):
    """The API refused the credentials (HTTP 401/403)."""


class OpenWhiskNotFound(OpenWhiskError):
    """The action, activation or namespace does not exist (HTTP 404)."""


class OpenWhiskThrottled(OpenWhiskError):
    """The platform kept answering 429 Too Many Requests for longer than allowed."""


class Auth:
    """Headers authenticating each request. Subclasses must be thread-safe."""

    #: A 401 may mean an expired credential that :meth:`invalidate` renews (bearer tokens).
    renewable = False

    def headers(self) -> dict[str, str]:
        return {}

    def invalidate(self) -> None:
        """Forget a cached credential (called once after a 401)."""

    def secrets(self) -> list[str]:
        """Strings that must never appear in messages or logs."""
        return []

    def describe(self) -> str:
        return "the credentials"


class BasicAuth(Auth):
    """OpenWhisk API keys: ``"uuid:key"`` sent as HTTP basic auth."""

    def __init__(self, api_key: str):
        self._key = api_key
        self._header = "Basic " + base64.b64encode(api_key.encode()).decode()

    def headers(self) -> dict[str, str]:
        return {"Authorization": self._header}

    def secrets(self) -> list[str]:
        return [self._key, self._header, self._key.partition(":")[2]]

    def describe(self) -> str:
        uuid = self._key.partition(":")[0]
        return f"the API key {uuid[:8]}… (from the config's api_key)"


#: the query of a non-blocking invocation
_NON_BLOCKING = {"blocking": "false"}


@functools.lru_cache(maxsize=256)
def _action_path(name: str) -> str:
    return "/actions/" + quote(name, safe="/")


def scrub(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "****")
    return text


class OpenWhiskClient:
    """The actions, activations and namespaces of one namespace on one API host."""

    def __init__(
        self,
        endpoint: str,
        namespace: str,
        auth: Auth,
        *,
        insecure: bool = False,
        retries: int = 5,
        throttle_timeout: float = 300.0,
        backoff_base: float = 0.05,
        backoff_max: float = 4.0,
        request_timeout: float = 30.0,
        pool_size: int = 128,
        extra_headers: dict[str, str] | None = None,
        user_agent: str = "wren",
    ):
        self.endpoint = endpoint.rstrip("/")
        self.namespace = namespace
        self.auth = auth
        self.insecure = insecure
        self.retries = retries
        self.throttle_timeout = throttle_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.request_timeout = request_timeout
        self.base = f"{self.endpoint}/api/v1/namespaces/{quote(namespace, safe='')}"
        self.session = requests.Session()
        self._adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(10, pool_size), max_retries=0, pool_block=False)
        self.session.mount("http://", self._adapter)
        self.session.mount("https://", self._adapter)
        # What requests would read from the environment on every request (HTTP(S)_PROXY,
        # NO_PROXY, REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE) is read once, here: scanning the
        # environment cost more CPU than the rest of an invocation.
        self.session.proxies = requests.utils.get_environ_proxies(self.endpoint)
        self.session.verify = False if insecure else (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        self.session.trust_env = False
        self._fixed_headers = {"Accept": "application/json", "User-Agent": user_agent, **(extra_headers or {})}
        self.session.headers.update(self._fixed_headers)
        #: invocations' poster (made on first use, from the session's proxies and verify), and
        #: the request line and fixed headers of each invoked URL
        self._poster: Poster | None = None
        self._poster_made = False
        self._heads: dict[tuple[Any, ...], bytes] = {}
        if insecure:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        #: counters (read by tests and the benchmark)
        self.stats = {"requests": 0, "throttled": 0, "server_errors": 0, "network_errors": 0}
        self._stats_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()
        if self._poster is not None:
            self._poster.close()

    def _get_poster(self) -> Poster | None:
        if not self._poster_made:
            with self._stats_lock:
                if not self._poster_made:
                    self._poster = make_poster(self.endpoint, self.session, self._adapter, self.request_timeout,
                                               {**self._fixed_headers, "Content-Type": "application/json"})
                    self._poster_made = True
        return self._poster

    # -- the request loop -------------------------------------------------------------------
    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        delay = min(self.backoff_max, self.backoff_base * (2 ** min(attempt, 20)))
        delay = random.uniform(delay / 2, delay)  # jitter: retries of many threads spread out
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.backoff_max))
            except ValueError:
                pass
        time.sleep(delay)

    def _error_text(self, resp: requests.Response | Answer) -> str:
        try:
            body = resp.json()
            text = body.get("error") or body.get("errorMessage") or body.get("message") or json.dumps(body)
            if isinstance(text, dict):
                text = text.get("error") or json.dumps(text)
        except ValueError:
            text = resp.text[:300]
        return scrub(str(text), self.auth.secrets())

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: dict[str, Any] | None = None,
        body: bytes | None = None,
        json_body: Any = None,
        allow: tuple[int, ...] = (),
        fast: bool = False,
        timeout: float | None = None,
    ) -> requests.Response | Answer:
        """Send a request under ``self.base`` + ``path``; retry what can be retried; raise an
        :class:`OpenWhiskError` saying ``what`` failed otherwise. Statuses in ``allow`` are
        returned to the caller instead of raised. ``fast``: a POST sent many times to the same
        URL (an invocation) goes on the calling thread's kept-alive connection
        (:mod:`wren_backend_openwhisk.posting`; no cookies, redirects or hooks: the API uses none)."""
        url = self.base + path
        headers = {}
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
        if body is not None:
            headers["Content-Type"] = "application/json"
        poster = None
        head = b""
        if fast and method == "POST" and body is not None:
            try:
                poster = self._get_poster()
                key = (path, *params.items()) if params else (path,)
                head = self._heads.get(key, b"")
                if poster is not None and not head:
                    query = urlencode(params or {})
                    head = self._heads[key] = poster.prepare(urlsplit(url).path + ("?" + query if query else ""))
            except ValueError as exc:  # a header or URL that cannot be sent
                raise OpenWhiskError(f"{what}: {scrub(str(exc), self.auth.secrets())}") from None
        attempt = 0  # 5xx and network failures so far
        throttled_since: float | None = None
        renewed = False
        n = 0
        while True:
            n += 1
            self._count("requests")
            resp: requests.Response | Answer
            try:
                if poster is not None:
                    resp = poster.post(head, body, self.auth.headers())  # type: ignore[arg-type]
                else:
                    resp = self.session.request(
                        method, url, params=params, data=body, headers={**headers, **self.auth.headers()},
                        timeout=timeout or self.request_timeout,
                    )
            except OpenWhiskError:
                raise
            except (requests.RequestException, *POST_ERRORS) as exc:
                self._count("network_errors")
                attempt += 1
                if attempt >= self.retries:
                    raise OpenWhiskError(
                        f"{what}: cannot reach the OpenWhisk API at {self.endpoint} after {attempt} attempt(s): "
                        f"{scrub(str(exc) or type(exc).__name__, self.auth.secrets())}"
                    ) from None
                self._sleep(attempt)
                continue
            except ValueError as exc:  # a header that cannot be sent (the auth's)
                raise OpenWhiskError(f"{what}: {scrub(str(exc), self.auth.secrets())}") from None
            status = resp.status_code
            if status < 400 or status in allow:
                return resp
            if status in (401, 403):
                if self.auth.renewable and not renewed:
                    renewed = True
                    self.auth.invalidate()
                    continue
                raise OpenWhiskAuthError(
                    f"{what}: the OpenWhisk API at {self.endpoint} refused {self.auth.describe()} "
                    f"for namespace {self.namespace!r} (HTTP {status}: {self._error_text(resp)}); "
                    "check the key and the namespace",
                    status,
                )
            if status == 429:
                self._count("throttled")
                now = time.monotonic()
                if throttled_since is None:
                    throttled_since = now
                text = self._error_text(resp)
                per_minute = "in the last minute" in text
                if now - throttled_since >= self.throttle_timeout:
                    raise OpenWhiskThrottled(
                        f"{what}: the platform kept throttling (HTTP 429 Too Many Requests) for "
                        f"{now - throttled_since:.0f} s, past throttle_timeout ({text}); "
                        + ("the namespace's invocations per minute are used up: raise throttle_timeout to wait "
                           "for later minutes, or ask for a higher per-minute limit" if per_minute else
                           "lower max_workers or ask for a higher concurrent-invocations limit"),
                        status,
                    )
                # the per-minute limit counts refused attempts too (RateThrottler): retry slowly
                self._sleep(20 if per_minute else min(n, 8), resp.headers.get("Retry-After"))
                continue
            if status >= 500:
                self._count("server_errors")
                attempt += 1
                if attempt >= self.retries:
                    raise OpenWhiskError(
                        f"{what}: the OpenWhisk API answered HTTP {status} {attempt} time(s) in a row: "
                        f"{self._error_text(resp)}",
                        status,
                    )
                self._sleep(attempt, resp.headers.get("Retry-After"))
                continue
            cls = OpenWhiskNotFound if status == 404 else OpenWhiskError
            raise cls(f"{what}: HTTP {status} from the OpenWhisk API: {self._error_text(resp)}", status)

    # -- namespaces ---------------------------------------------------------------------------
    def list_namespaces(self) -> list[str]:
        resp = self.session.get(self.endpoint + "/api/v1/namespaces", headers=self.auth.headers(),
                                timeout=self.request_timeout)
        if resp.status_code in (401, 403):
            raise OpenWhiskAuthError(f"listing namespaces: the API refused {self.auth.describe()}", resp.status_code)
        if resp.status_code >= 400:
            raise OpenWhiskError(f"listing namespaces: HTTP {resp.status_code}: {self._error_text(resp)}", resp.status_code)
        return list(resp.json())

    # -- actions -----------------------------------------------------------------------------
    def put_action(
        self,
        name: str,
        image: str,
        memory: int,
        timeout_s: float,
        concurrency: int = 1,
        annotations: dict[str, Any] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create or replace a docker ("blackbox") action running ``image``."""
        body = {
            "exec": {"kind": "blackbox", "image": image, "binary": False},
            "limits": {"memory": int(memory), "timeout": int(timeout_s * 1000), "concurrency": int(concurrency)},
            "annotations": [{"key": k, "value": v} for k, v in (annotations or {}).items()],
            "parameters": [{"key": k, "value": v} for k, v in (parameters or {}).items()],
        }
        resp = self.request("PUT", _action_path(name), f"deploying action {name!r}",
                            params={"overwrite": "true"}, json_body=body)
        return resp.json()

    def get_action(self, name: str) -> dict[str, Any] | None:
        resp = self.request("GET", _action_path(name), f"reading action {name!r}", allow=(404,))
        return None if resp.status_code == 404 else resp.json()

    def delete_action(self, name: str) -> bool:
        resp = self.request("DELETE", _action_path(name), f"deleting action {name!r}", allow=(404,))
        return resp.status_code != 404

    def list_actions(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        skip = 0
        while True:
            page = self.request("GET", "/actions", "listing actions", params={"limit": 200, "skip": skip}).json()
            out.extend(page)
            if len(page) < 200:
                return out
            skip += len(page)

    # -- activations -------------------------------------------------------------------------
    def invoke(self, name: str, body: bytes) -> str:
        """Start an activation of ``name`` with the JSON ``body`` as its parameters (non-blocking).
        Returns the activation id once the platform accepted it (HTTP 202)."""
        resp = self.request("POST", _action_path(name), f"invoking action {name!r}", params=_NON_BLOCKING, body=body,
                            fast=True)
        try:
            return resp.json()["activationId"]
        except (ValueError, KeyError):
            raise OpenWhiskError(f"invoking action {name!r}: the answer has no activationId: {resp.text[:200]}") from None

    def invoke_and_wait(self, name: str, body: bytes, wait: float) -> Any:
        """Start an activation (non-blocking: the POST is answered at once, so it is never sent
        twice because an answer came late) and poll its record for the result."""
        what = f"invoking action {name!r}"
        return self._poll_result(self.invoke(name, body), wait, what)

    def invoke_blocking(self, name: str, params: dict[str, Any] | None = None, wait: float = 120.0,
                        body: bytes | None = None) -> Any:
        """Run an activation with ``params`` (or the JSON ``body``) and return its result (waits;
        polls when the platform gives up waiting and answers 202). The controller holds a
        blocking request up to ``BLOCKING_WAIT`` s: the request's timeout is longer than that,
        or a slow answer would make the request be sent (and the action run) again."""
        what = f"invoking action {name!r} (blocking)"
        resp = self.request("POST", _action_path(name), what, params={"blocking": "true", "result": "true"},
                            json_body=params if body is None else None, body=body, allow=(500, 502),
                            timeout=max(self.request_timeout, BLOCKING_WAIT + 10))
        if resp.status_code == 202:
            return self._poll_result(resp.json()["activationId"], wait, what)
        result = resp.json()
        if resp.status_code in (500, 502) or (isinstance(result, dict) and "error" in result and len(result) == 1):
            err = result.get("error") if isinstance(result, dict) else result
            if isinstance(err, dict):
                err = err.get("error") or (err.get("response") or {}).get("result", {}).get("error") or err
            raise OpenWhiskError(f"{what}: the action failed: {scrub(str(err), self.auth.secrets())}", resp.status_code)
        return result

    def get_activation(self, activation_id: str) -> dict[str, Any] | None:
        resp = self.request("GET", f"/activations/{quote(activation_id)}", f"reading activation {activation_id}",
                            allow=(404,))
        return None if resp.status_code == 404 else resp.json()

    def _poll_result(self, activation_id: str, wait: float, what: str) -> Any:
        deadline = time.monotonic() + wait
        delay = 0.1
        while time.monotonic() < deadline:
            record = self.get_activation(activation_id)
            if record is not None and record.get("response"):
                response = record["response"]
                result = response.get("result")
                if not response.get("success", True):
                    raise OpenWhiskError(f"{what}: the action failed: {scrub(str(result), self.auth.secrets())}")
                return result
            time.sleep(delay)
            delay = min(2.0, delay * 1.5)
        raise OpenWhiskError(f"{what}: activation {activation_id} gave no result within {wait:.0f} s")
