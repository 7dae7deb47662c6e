"""IBM Cloud Object Storage for wren: ``storage='ibm_cos'`` (any S3-compatible endpoint works)."""
from wren_storage_cos.config import COSConfig
from wren_storage_cos.storage import COSStorage

__version__ = "0.1.0"
__all__ = ["COSConfig", "COSStorage", "__version__"]
