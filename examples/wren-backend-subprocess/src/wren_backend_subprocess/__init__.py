"""An example third-party Wren compute plugin: ``backend='subprocess'``."""
from wren_backend_subprocess.backend import SubprocessBackend, SubprocessConfig

__all__ = ["SubprocessBackend", "SubprocessConfig"]
