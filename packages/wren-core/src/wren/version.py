"""The version of wren-core (kept in step with every first-party distribution)."""
__version__ = "0.1.0"

import sys as _sys

#: ``"3.11"``: the Python a client or runtime runs (cloudpickle needs the same minor version).
PYTHON_VERSION = f"{_sys.version_info[0]}.{_sys.version_info[1]}"
