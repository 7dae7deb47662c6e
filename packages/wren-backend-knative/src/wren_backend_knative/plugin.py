"""The wren plugin module (entry point ``knative`` in the ``wren`` group)."""
from __future__ import annotations

import wren


@wren.hookimpl
def wren_compute_backends() -> list[wren.ComputeBackendSpec]:
    from wren_backend_knative.backend import KnativeBackend
    from wren_backend_knative.config import KnativeConfig

    return [wren.ComputeBackendSpec("knative", KnativeBackend, KnativeConfig, "Knative Serving services on Kubernetes")]
