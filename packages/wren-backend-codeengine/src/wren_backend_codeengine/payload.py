"""What a job run carries, and how it is checked.

A wren job's calls reach a Code Engine job run in two parts:

- the **payload object** in storage (the bucket is untrusted): the job record without anything
  secret, the calls, and how many calls each array index runs. It is signed (HMAC-SHA256) with
  the job's signing key, bound to its own key name, so that a payload replaced or moved in the
  bucket is refused;
- the **run secrets**, in a Code Engine secret that the job run references as the environment
  variable ``WREN_CE_SECRETS`` (JSON): the signing keys, the storage settings (credentials
  included) and the config the workers get. They never go to storage.

The worker side (:mod:`wren_backend_codeengine.entry`) joins them again.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from wren.errors import WrenError
from wren.worker import protocol

MAGIC = b"WRENCE1\n"
#: Fields of a job record that must not be stored: they travel in the run secrets.
SECRET_FIELDS = ("secret", "root_secret", "storage", "config", "events")
#: Environment variables of a job run / instance
ENV_SECRETS = "WREN_CE_SECRETS"
ENV_BUCKET = "WREN_CE_BUCKET"
ENV_PAYLOAD = "WREN_CE_PAYLOAD"
ENV_MANAGED = "WREN_CE_MANAGED_BY"
#: The key of the run secrets in the Code Engine secret
SECRET_KEY = "secrets"


class PayloadError(WrenError):
    """A payload that is missing, malformed or not signed by the job's key."""


def split_job(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what may be stored, what must stay secret) of a job record."""
    public = {k: v for k, v in job.items() if k not in SECRET_FIELDS}
    secret = {k: job[k] for k in SECRET_FIELDS if k in job}
    return public, secret


def _mac(key: bytes, name: str, body: bytes) -> str:
    return hmac.new(key, b"wren-codeengine-payload\0" + name.encode() + b"\0" + body, hashlib.sha256).hexdigest()


def pack(job: dict[str, Any], calls: list[dict[str, Any]], per_instance: int, key_name: str) -> bytes:
    """The signed payload object of ``calls`` (index ``i`` runs ``calls[i*per_instance:...]``)."""
    public, _ = split_job(job)
    body = protocol.dumps({"job": public, "calls": list(calls), "per_instance": per_instance})
    return MAGIC + _mac(bytes.fromhex(job["secret"]), key_name, body).encode() + b"\n" + body


def unpack(blob: bytes, secret_hex: str, key_name: str) -> dict[str, Any]:
    """The payload's content, once its signature is checked."""
    if not blob.startswith(MAGIC):
        raise PayloadError(f"{key_name} is not a wren Code Engine payload")
    mac, _, body = blob[len(MAGIC):].partition(b"\n")
    if not hmac.compare_digest(mac.decode(errors="replace"), _mac(bytes.fromhex(secret_hex), key_name, body)):
        raise PayloadError(f"{key_name} is not signed by this job's key: it was replaced or moved in the bucket")
    return protocol.loads(body)


def calls_of(payload: dict[str, Any], index: int) -> list[dict[str, Any]]:
    per = int(payload["per_instance"])
    return payload["calls"][index * per: (index + 1) * per]


def sign_metadata(key: bytes, name: str, meta: dict[str, Any]) -> bytes:
    body = json.dumps(meta, sort_keys=True).encode()
    return MAGIC + _mac(key, name, body).encode() + b"\n" + body


def read_metadata(blob: bytes, key: bytes, name: str) -> dict[str, Any]:
    if not blob.startswith(MAGIC):
        raise PayloadError(f"{name} is not runtime metadata written by wren")
    mac, _, body = blob[len(MAGIC):].partition(b"\n")
    if not hmac.compare_digest(mac.decode(errors="replace"), _mac(key, name, body)):
        raise PayloadError(f"{name} is not signed by the metadata job run's key")
    return json.loads(body)
