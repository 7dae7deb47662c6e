"""The OpenWhisk REST API's own description, applied to what the emulator sees and says.

``specs/openwhisk-apiv1-swagger.json`` is an extract of apache/openwhisk's
``core/controller/src/main/resources/apiv1swagger.json`` (commit pinned in its
``x-wren-source``): the paths wren uses and every definition and response they reference,
unchanged. :class:`SwaggerChecker` validates, with ``jsonschema`` (Swagger 2.0 schemas are JSON
Schema draft 4), every request body the emulator receives against the operation's ``in: body``
parameter and every answer against the operation's response for that status. A status the
operation does not list (413 and 400 on invocations, which the real controller sends too) is
checked against ``ErrorMessage``, the body of every error the controller sends
(``ErrorResponse.scala``), and counted as undocumented. Violations are collected, not raised:
the test fixtures fail the test that caused them.
"""
from __future__ import annotations

import json
import pathlib
import threading
from typing import Any

import jsonschema

SPEC_PATH = pathlib.Path(__file__).parent / "specs" / "openwhisk-apiv1-swagger.json"


class SwaggerChecker:
    def __init__(self, path: pathlib.Path = SPEC_PATH):
        self.spec = json.loads(path.read_text())
        self.source = self.spec["x-wren-source"]
        self._validators: dict[str, jsonschema.Draft4Validator] = {}
        self.lock = threading.Lock()
        #: what was checked: {"requests": n, "responses": n, "undocumented": n}
        self.counts = {"requests": 0, "responses": 0, "undocumented": 0}
        #: (what, problem) of every violation
        self.violations: list[tuple[str, str]] = []
        #: (method, path, status) answered with a status the operation does not list
        self.undocumented: set[tuple[str, str, int]] = set()

    def _validator(self, schema: dict[str, Any]) -> jsonschema.Draft4Validator:
        key = json.dumps(schema, sort_keys=True)
        v = self._validators.get(key)
        if v is None:
            # the definitions travel with the schema: "#/definitions/X" resolves against it
            v = jsonschema.Draft4Validator({"definitions": self.spec["definitions"], "allOf": [schema]})
            self._validators[key] = v
        return v

    def _check(self, what: str, schema: dict[str, Any] | None, body: Any) -> None:
        if schema is None:
            return
        errors = sorted(self._validator(schema).iter_errors(body), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            where = "/".join(str(p) for p in e.path) or "(root)"
            with self.lock:
                self.violations.append((what, f"{where}: {e.message}"))

    def _operation(self, method: str, template: str) -> dict[str, Any]:
        try:
            return self.spec["paths"][template][method.lower()]
        except KeyError:
            raise AssertionError(f"the swagger has no operation {method} {template}") from None

    def check_request(self, method: str, template: str, body: Any) -> str | None:
        """Validate a request body; returns the first problem (the controller answers 400)."""
        op = self._operation(method, template)
        schema = next((p.get("schema") for p in op.get("parameters") or [] if p.get("in") == "body"), None)
        with self.lock:
            self.counts["requests"] += 1
        before = len(self.violations)
        if body is not None or any(p.get("in") == "body" and p.get("required") for p in op.get("parameters") or []):
            self._check(f"request {method} {template}", schema, body)
        with self.lock:
            return self.violations[-1][1] if len(self.violations) > before else None

    def check_response(self, method: str, template: str, status: int, body: Any) -> None:
        op = self._operation(method, template)
        response = (op.get("responses") or {}).get(str(status))
        with self.lock:
            self.counts["responses"] += 1
        if response is None:
            with self.lock:
                self.counts["undocumented"] += 1
                self.undocumented.add((method, template, status))
            if status >= 400:
                self._check(f"response {status} to {method} {template} (undocumented status)",
                            {"$ref": "#/definitions/ErrorMessage"}, body)
            else:
                with self.lock:
                    self.violations.append((f"response to {method} {template}", f"status {status} is not a documented answer"))
            return
        if "$ref" in response:
            response = self.spec["responses"][response["$ref"].rsplit("/", 1)[-1]]
        schema = response.get("schema")
        if schema is None and status >= 400:
            schema = {"$ref": "#/definitions/ErrorMessage"}  # 429: the controller's ErrorResponse body
        self._check(f"response {status} to {method} {template}", schema, body)

    def take_violations(self) -> list[tuple[str, str]]:
        with self.lock:
            out, self.violations = self.violations, []
        return out


#: one checker per test session, shared by every emulator (the summary prints its counts)
CHECKER = SwaggerChecker()
