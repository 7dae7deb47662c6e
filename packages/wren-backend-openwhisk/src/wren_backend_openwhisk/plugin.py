"""The wren plugin module (entry point ``openwhisk`` in the ``wren`` group)."""
from __future__ import annotations

import wren


@wren.hookimpl
def wren_compute_backends() -> list[wren.ComputeBackendSpec]:
    from wren_backend_openwhisk.backend import OpenWhiskBackend
    from wren_backend_openwhisk.config import OpenWhiskConfig

    return [wren.ComputeBackendSpec("openwhisk", OpenWhiskBackend, OpenWhiskConfig, "Apache OpenWhisk docker actions")]
