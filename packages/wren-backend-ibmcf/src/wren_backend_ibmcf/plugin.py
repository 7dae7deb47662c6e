"""The wren plugin module (entry point ``ibm_cf`` in the ``wren`` group)."""
from __future__ import annotations

import wren


@wren.hookimpl
def wren_compute_backends() -> list[wren.ComputeBackendSpec]:
    from wren_backend_ibmcf.backend import IBMCloudFunctionsBackend
    from wren_backend_ibmcf.config import IBMCFConfig

    return [wren.ComputeBackendSpec("ibm_cf", IBMCloudFunctionsBackend, IBMCFConfig, "IBM Cloud Functions actions")]
