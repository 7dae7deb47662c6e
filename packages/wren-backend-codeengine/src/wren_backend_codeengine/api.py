"""The Code Engine API v2 through the official SDK (``ibm-code-engine-sdk``), with retries.

:class:`CodeEngineAPI` wraps :class:`ibm_code_engine_sdk.code_engine_v2.CodeEngineV2` with an
``IAMAuthenticator`` (the API key is exchanged for IAM bearer tokens, renewed by the SDK before
they expire). Every request goes through :meth:`CodeEngineAPI.call`, which

- retries 429 answers (waiting at least the ``Retry-After`` the API sent), 5xx answers and
  requests that got no answer, with jittered exponential backoff, for up to ``retry_timeout``;
- turns what is left into wren errors whose messages never hold the API key or a token:
  :class:`CodeEngineAuthError` for a refused key or token, :class:`CodeEngineError` otherwise;
- counts requests (``requests``, ``retried``) for tests and the benchmark.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from wren.errors import ConfigError, InvocationError

from wren_backend_codeengine.config import CodeEngineConfig

logger = logging.getLogger("wren.code_engine")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: The API version the requests ask for (any date the SDK documents)
API_VERSION = "2025-01-01"


class CodeEngineError(InvocationError):
    """The Code Engine API refused or failed a request (``status`` is the HTTP code, or None)."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason


class CodeEngineAuthError(CodeEngineError, ConfigError):
    """The API key or its token was refused: a configuration problem, not a transient one."""


class CodeEngineNotFound(CodeEngineError):
    pass


def scrub(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "****")
    return text


def _reason(exc: Any) -> str:
    """The API's message of an ApiException (``errors[0].message``), else its body."""
    resp = getattr(exc, "http_response", None)
    if resp is not None:
        try:
            body = resp.json()
            errors = body.get("errors") if isinstance(body, dict) else None
            if errors:
                e = errors[0]
                return f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
            if isinstance(body, dict) and ("errorMessage" in body or "message" in body):
                return f"{body.get('errorCode', '')}: {body.get('errorMessage') or body.get('message')}".strip(": ")
        except ValueError:
            return resp.text[:300]
    return str(getattr(exc, "message", None) or exc)[:300]


class CodeEngineAPI:
    """One client of one project: thread-safe (the SDK's requests session is shared)."""

    def __init__(self, config: CodeEngineConfig, *, service: Any = None):
        self.config = config
        self._service = service
        self._lock = threading.Lock()
        self._project_id: str | None = config.project_id
        self.stats = {"requests": 0, "retried": 0}

    # -- the SDK client ---------------------------------------------------------------------------
    @property
    def service(self) -> Any:
        if self._service is None:
            with self._lock:
                if self._service is None:
                    self._service = self._make_service()
        return self._service

    def _make_service(self) -> Any:
        if not self.config.api_key:
            raise ConfigError(
                "code_engine.api_key is not set: create an IBM Cloud API key (ibmcloud iam api-key-create "
                "wren) and set it in the config file or WREN_CODE_ENGINE__API_KEY"
            )
        from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
        from ibm_code_engine_sdk.code_engine_v2 import CodeEngineV2

        try:
            auth = IAMAuthenticator(self.config.api_key, url=self.config.iam_url)
        except ValueError:
            raise ConfigError("code_engine.api_key is not a valid API key (it has quotes or braces); check it") from None
        service = CodeEngineV2(authenticator=auth, version=API_VERSION)
        service.set_service_url(self.config.api_url)
        service.set_http_config({"timeout": self.config.api_timeout})
        return service

    def secrets(self) -> list[str]:
        out = [self.config.api_key or "", self.config.registry_password or ""]
        svc = self._service
        try:
            tm = svc.authenticator.token_manager if svc is not None else None
            if tm is not None and getattr(tm, "access_token", None):
                out.append(tm.access_token)
        except AttributeError:
            pass
        return [s for s in out if s]

    # -- requests ---------------------------------------------------------------------------------
    def call(self, what: str, method: str, *args: Any, allow_404: bool = False, **kwargs: Any) -> Any:
        """``service.<method>(*args, **kwargs).get_result()`` with retries; ``None`` for a 404
        when ``allow_404``."""
        from ibm_cloud_sdk_core import ApiException

        started = time.monotonic()
        attempt = 0
        while True:
            with self._lock:
                self.stats["requests"] += 1
            retry_after: float | None = None
            try:
                return getattr(self.service, method)(*args, **kwargs).get_result()
            except ApiException as exc:
                status = exc.status_code
                reason = scrub(_reason(exc), self.secrets())
                if status == 404 and allow_404:
                    return None
                iam = exc.http_response is not None and str(exc.http_response.url or "").startswith(self.config.iam_url)
                if iam and status in (400, 401, 403):  # the token exchange itself
                    raise CodeEngineAuthError(
                        f"the IAM token service at {self.config.iam_url} refused the IBM Cloud API key "
                        f"(code_engine.api_key; HTTP {status}: {reason}); check the key", status, reason,
                    ) from None
                if status in (401, 403):
                    raise CodeEngineAuthError(
                        f"{what}: Code Engine refused the request (HTTP {status}: {reason}); check that "
                        "code_engine.api_key belongs to an identity with access to the project", status, reason,
                    ) from None
                if status not in RETRY_STATUSES:
                    cls = CodeEngineNotFound if status == 404 else CodeEngineError
                    raise cls(f"{what}: Code Engine answered HTTP {status}: {reason}", status, reason) from None
                problem = f"HTTP {status}: {reason}"
                header = exc.http_response.headers.get("Retry-After") if exc.http_response is not None else None
                try:
                    retry_after = float(header) if header else None
                except ValueError:
                    retry_after = None
            except (ConfigError, CodeEngineError):
                raise
            except Exception as exc:  # noqa: BLE001 - connection errors of requests, SDK errors
                name = type(exc).__name__
                if "Connection" not in name and "Timeout" not in name and not _is_requests_error(exc):
                    raise CodeEngineError(f"{what}: {name}: {scrub(str(exc), self.secrets())}") from None
                problem = f"{name}: {scrub(str(exc), self.secrets())[:200]}"
            elapsed = time.monotonic() - started
            if elapsed >= self.config.retry_timeout:
                raise CodeEngineError(
                    f"{what}: Code Engine did not accept the request within {self.config.retry_timeout:g} s "
                    f"(code_engine.retry_timeout; {attempt + 1} attempts); last: {problem}"
                )
            delay = min(self.config.backoff_max, self.config.backoff_base * 2 ** min(attempt, 20))
            delay = random.uniform(delay / 2, delay)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.config.backoff_max))
            delay = min(delay, max(0.0, self.config.retry_timeout - elapsed))
            attempt += 1
            with self._lock:
                self.stats["retried"] += 1
            logger.debug("%s: %s; retry %d in %.2f s", what, problem, attempt, delay)
            time.sleep(delay)

    # -- the project ------------------------------------------------------------------------------
    @property
    def project_id(self) -> str:
        """The configured project's ID (``project_name`` looked up once)."""
        if self._project_id is None:
            name = self.config.project_name
            if not name:
                raise ConfigError("code_engine needs project_id or project_name (the Code Engine project to run in)")
            found, start = None, None
            while found is None:
                page = self.call("listing the Code Engine projects", "list_projects", limit=100, start=start)
                for p in page.get("projects", []):
                    if p.get("name") == name:
                        found = p["id"]
                        break
                start = ((page.get("next") or {}).get("start"))
                if found is None and not start:
                    raise ConfigError(
                        f"code_engine.project_name {name!r}: no such project in region {self.config.region} "
                        "(ibmcloud ce project list shows yours)"
                    )
            self._project_id = found
        return self._project_id

    def list_all(self, what: str, method: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start = None
        while True:
            page = self.call(what, method, self.project_id, limit=100, start=start, **kwargs)
            out.extend(page.get(key, []))
            start = (page.get("next") or {}).get("start")
            if not start:
                return out


def _is_requests_error(exc: BaseException) -> bool:
    try:
        import requests
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, requests.RequestException)

