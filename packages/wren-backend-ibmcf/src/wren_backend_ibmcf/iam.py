"""IAM bearer tokens from an IBM Cloud API key, renewed before they expire (thread-safe)."""
from __future__ import annotations

import logging
import threading
import time

import requests

from wren_backend_openwhisk.client import Auth, OpenWhiskAuthError, OpenWhiskError, scrub

logger = logging.getLogger("wren.ibm_cf")

GRANT_TYPE = "urn:ibm:params:oauth:grant-type:apikey"


class IAMTokenAuth(Auth):
    """``Authorization: Bearer <token>``; the token is exchanged at ``iam_endpoint`` on first
    use and again ``refresh_margin`` seconds before its expiry. One thread renews while the
    others wait for the new token; a 401 from the API forces a renewal (once per request)."""

    renewable = True

    def __init__(self, api_key: str, iam_endpoint: str, refresh_margin: float = 300.0, insecure: bool = False,
                 timeout: float = 30.0):
        self._key = api_key
        self.iam_endpoint = iam_endpoint
        self.refresh_margin = refresh_margin
        self.verify = not insecure
        self.timeout = timeout
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self._session = requests.Session()
        #: tokens obtained (tests read it)
        self.exchanges = 0

    def _fresh(self) -> bool:
        return self._token is not None and time.time() < self._expires - self.refresh_margin

    def token(self) -> str:
        if self._fresh():
            return self._token  # type: ignore[return-value]
        with self._lock:
            if not self._fresh():
                self._exchange()
            return self._token  # type: ignore[return-value]

    def _exchange(self) -> None:
        try:
            resp = self._session.post(
                self.iam_endpoint, data={"grant_type": GRANT_TYPE, "apikey": self._key},
                headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
                timeout=self.timeout, verify=self.verify,
            )
        except requests.RequestException as exc:
            raise OpenWhiskError(f"cannot reach the IAM token service at {self.iam_endpoint}: "
                                 f"{scrub(str(exc), self.secrets())}") from None
        if resp.status_code in (400, 401, 403):
            try:
                body = resp.json()
                why = f"{body.get('errorCode', '')}: {body.get('errorMessage', '')}".strip(": ")
            except ValueError:
                why = resp.text[:200]
            raise OpenWhiskAuthError(
                f"the IAM token service at {self.iam_endpoint} refused the IBM Cloud API key "
                f"(ibm_cf.api_key; HTTP {resp.status_code}: {scrub(why, self.secrets())}); check the key",
                resp.status_code,
            )
        if resp.status_code >= 400:
            raise OpenWhiskError(f"the IAM token service at {self.iam_endpoint} answered HTTP {resp.status_code}",
                                 resp.status_code)
        body = resp.json()
        now = time.time()
        self._token = body["access_token"]
        self._expires = float(body.get("expiration") or now + float(body.get("expires_in") or 3600))
        # a token shorter-lived than the margin is renewed half-way through its life instead
        life = self._expires - now
        if life <= self.refresh_margin:
            self._expires = now + life / 2 + self.refresh_margin
        self.exchanges += 1
        logger.debug("IAM token obtained, valid for %.0f s", life)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def invalidate(self) -> None:
        with self._lock:
            self._token = None
            self._expires = 0.0

    def secrets(self) -> list[str]:
        return [self._key] + ([self._token] if self._token else [])

    def describe(self) -> str:
        return "the IAM token of the IBM Cloud API key (ibm_cf.api_key)"
