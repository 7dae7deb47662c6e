"""The Knative Service CRD's own schema, applied to every Service body the stand-in receives.

``specs/knative-service-v1-crd-schema.json`` is the ``v1`` ``openAPIV3Schema`` of knative/serving's
``config/core/300-resources/service.yaml`` (commit pinned in its ``x-wren-source``; descriptions
removed, otherwise unchanged). :class:`CRDChecker` validates a body with ``jsonschema`` (the
API server's structural-schema validation: a violation is a 422 Invalid) and also reports fields
the schema does not know, which a real API server would silently prune (so wren would believe
it set something it did not). Violations are collected; the fixtures fail the test.
"""
from __future__ import annotations

import json
import pathlib
import threading
from typing import Any

import jsonschema

SPEC_PATH = pathlib.Path(__file__).parent / "specs" / "knative-service-v1-crd-schema.json"


def _unknown_fields(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            if props is not None and k in props:
                out += _unknown_fields(v, props[k], f"{path}.{k}")
            elif isinstance(extra, dict):
                out += _unknown_fields(v, extra, f"{path}.{k}")
            elif props is not None:
                out.append(f"{path}.{k}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            out += _unknown_fields(v, schema["items"], f"{path}[{i}]")
    return out


class CRDChecker:
    def __init__(self, path: pathlib.Path = SPEC_PATH):
        doc = json.loads(path.read_text())
        self.source = doc["x-wren-source"]
        self.schema = doc["openAPIV3Schema"]
        self.validator = jsonschema.Draft7Validator(self.schema)
        self.lock = threading.Lock()
        #: Service bodies received (create, update, patch results) and Service objects answered
        self.counts = {"bodies": 0, "answers": 0}
        self.violations: list[tuple[str, str]] = []

    def check(self, what: str, body: Any) -> str | None:
        """The API server's answer to ``body``: the first schema error (422), else None. Fields
        it would prune are recorded as violations too."""
        with self.lock:
            self.counts["bodies"] += 1
        errors = sorted(self.validator.iter_errors(body), key=lambda e: list(e.path))
        problem = None
        if errors:
            e = errors[0]
            where = ".".join(str(p) for p in e.path) or "(root)"
            problem = f"{where}: {e.message}"
            with self.lock:
                self.violations.append((what, problem))
        unknown = _unknown_fields(body, self.schema, "")
        if unknown:
            with self.lock:
                self.violations.append((what, f"fields the CRD schema does not know (pruned by a real API server): "
                                              f"{', '.join(u.lstrip('.') for u in unknown)}"))
        return problem

    def check_answer(self, what: str, obj: Any) -> None:
        """A Service the stand-in answers with (status included) must fit the schema too."""
        with self.lock:
            self.counts["answers"] += 1
        errors = sorted(self.validator.iter_errors(obj), key=lambda e: list(e.path))
        unknown = _unknown_fields(obj, self.schema, "")
        with self.lock:
            if errors:
                e = errors[0]
                self.violations.append((what, f"{'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}"))
            if unknown:
                self.violations.append((what, "fields the CRD schema does not know: " +
                                        ", ".join(u.lstrip(".") for u in unknown)))

    def take_violations(self) -> list[tuple[str, str]]:
        with self.lock:
            out, self.violations = self.violations, []
        return out


CHECKER = CRDChecker()
