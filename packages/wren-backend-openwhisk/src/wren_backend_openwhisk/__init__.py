"""Apache OpenWhisk compute for wren: ``backend='openwhisk'``.

The REST client (:mod:`wren_backend_openwhisk.client`) is shared with ``wren-backend-ibmcf``.
"""
from wren_backend_openwhisk.backend import OpenWhiskBackend, action_name
from wren_backend_openwhisk.client import (
    Auth,
    BasicAuth,
    OpenWhiskAuthError,
    OpenWhiskClient,
    OpenWhiskError,
    OpenWhiskNotFound,
    OpenWhiskThrottled,
)
from wren_backend_openwhisk.config import OpenWhiskConfig

__version__ = "0.1.0"
__all__ = [
    "Auth", "BasicAuth", "OpenWhiskAuthError", "OpenWhiskBackend", "OpenWhiskClient", "OpenWhiskConfig",
    "OpenWhiskError", "OpenWhiskNotFound", "OpenWhiskThrottled", "__version__", "action_name",
]
