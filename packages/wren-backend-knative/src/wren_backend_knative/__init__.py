"""Knative Serving compute for wren: ``backend='knative'``.

Each runtime (image and memory size) is a ``serving.knative.dev/v1`` Service managed through the
official ``kubernetes`` client; calls are HTTP requests to it, kept in flight on one event loop.
"""
from wren_backend_knative.backend import KnativeBackend, Target
from wren_backend_knative.config import KnativeConfig
from wren_backend_knative.dispatch import Dispatcher
from wren_backend_knative.services import (
    KnativeError,
    KnativeNotReadyError,
    KnativeServices,
    load_api_client,
    service_manifest,
    service_name,
)

__version__ = "0.1.0"
__all__ = [
    "Dispatcher", "KnativeBackend", "KnativeConfig", "KnativeError", "KnativeNotReadyError", "KnativeServices",
    "Target", "__version__", "load_api_client", "service_manifest", "service_name",
]
