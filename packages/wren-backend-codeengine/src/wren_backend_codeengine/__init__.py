"""IBM Cloud Code Engine compute for wren: ``backend='code_engine'``.

Each wren job runs as a Code Engine batch job run whose array indices each run a share of the
calls through wren-core's worker runtime (``python -m wren_backend_codeengine.entry`` in the
runtime image), driven through the official ``ibm-code-engine-sdk`` (API v2).
"""
from wren_backend_codeengine.api import CodeEngineAPI, CodeEngineAuthError, CodeEngineError
from wren_backend_codeengine.backend import CodeEngineBackend, job_name, parse_indices
from wren_backend_codeengine.config import VALID_COMBINATIONS, CodeEngineConfig, check_combination

__version__ = "0.1.0"
__all__ = [
    "VALID_COMBINATIONS", "CodeEngineAPI", "CodeEngineAuthError", "CodeEngineBackend", "CodeEngineConfig",
    "CodeEngineError", "__version__", "check_combination", "job_name", "parse_indices",
]
