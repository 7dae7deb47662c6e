"""IBM Cloud Functions compute for wren: ``backend='ibm_cf'``.

Built on ``wren-backend-openwhisk`` (IBM Cloud Functions is OpenWhisk): the same REST client and
backend, with IAM bearer tokens (and ``X-Namespace-Id``) for IAM namespaces or the basic-auth
API key of a Cloud Foundry namespace.
"""
from wren_backend_ibmcf.backend import IBMCloudFunctionsBackend
from wren_backend_ibmcf.config import IBMCFConfig
from wren_backend_ibmcf.iam import IAMTokenAuth

__version__ = "0.1.0"
__all__ = ["IAMTokenAuth", "IBMCFConfig", "IBMCloudFunctionsBackend", "__version__"]
