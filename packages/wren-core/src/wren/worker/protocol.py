"""The invocation payload on the wire: JSON, with bytes as ``{"__b64__": "..."}``.

Backends send ``encode({"job": job, "calls": [call, ...]})`` as the body (or OpenWhisk action
parameters), where ``job`` and the calls are :class:`wren.records.Job` and
:class:`wren.records.Call` (sent in their versioned wire form); the worker's HTTP entry point
decodes it. No pickle in the envelope: the only
pickled parts are the signed function, data and results that the runtime verifies.
"""
from __future__ import annotations

import base64
import json
from typing import Any


#: values that are their own JSON form (exact types: subclasses take the general path)
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _enc(obj: Any) -> Any:
    if type(obj) in _PLAIN:
        return obj
    to_wire = getattr(obj, "to_wire", None)
    if to_wire is not None:  # a wren.records.Job or Call
        obj = to_wire()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"__b64__": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, dict):
        return {str(k): _enc(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_enc(v) for v in obj]
    return obj


def _dec(obj: Any) -> Any:
    if isinstance(obj, dict):
        if len(obj) == 1 and "__b64__" in obj:
            return base64.b64decode(obj["__b64__"])
        return {k: _dec(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_dec(v) for v in obj]
    return obj


def encode(payload: Any) -> Any:
    """A JSON-safe copy of ``payload`` (records in their wire form, bytes as base64)."""
    return _enc(payload)


def decode(payload: Any) -> Any:
    """The inverse of :func:`encode` (records stay in their wire form: dicts)."""
    return _dec(payload)


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(encode(payload), separators=(",", ":")).encode()


def loads(body: bytes) -> dict[str, Any]:
    return decode(json.loads(body))


def dumps_line(payload: Any) -> bytes:
    """:func:`dumps` as one line of JSON lines (``application/x-ndjson``), newline included;
    what JSON cannot hold is sent as its ``str``."""
    return json.dumps(encode(payload), separators=(",", ":"), default=str).encode() + b"\n"


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "__b64__" in obj:
        return base64.b64decode(obj["__b64__"])
    return obj


def loads_line(line: bytes) -> Any:
    """The inverse of :func:`dumps_line` (and of :func:`dumps`): decodes as it parses."""
    return json.loads(line, object_hook=_hook)
