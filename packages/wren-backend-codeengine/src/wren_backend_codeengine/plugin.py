"""The wren plugin module (entry point ``code_engine`` in the ``wren`` group)."""
from __future__ import annotations

import wren


@wren.hookimpl
def wren_compute_backends() -> list[wren.ComputeBackendSpec]:
    from wren_backend_codeengine.backend import CodeEngineBackend
    from wren_backend_codeengine.config import CodeEngineConfig

    return [wren.ComputeBackendSpec("code_engine", CodeEngineBackend, CodeEngineConfig,
                                    "IBM Cloud Code Engine batch job runs (array indices)")]
