"""The wren plugin module (entry point ``ibm_cos`` in the ``wren`` group)."""
from __future__ import annotations

import wren


@wren.hookimpl
def wren_storage_backends() -> list[wren.StorageBackendSpec]:
    from wren_storage_cos.config import COSConfig
    from wren_storage_cos.storage import COSStorage

    return [wren.StorageBackendSpec("ibm_cos", COSStorage, COSConfig, "IBM Cloud Object Storage / S3")]
