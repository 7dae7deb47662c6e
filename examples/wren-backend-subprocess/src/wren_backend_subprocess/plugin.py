"""The hook module named by the ``wren`` entry point."""
import wren

from wren_backend_subprocess.backend import SubprocessBackend, SubprocessConfig


@wren.hookimpl
def wren_compute_backends():
    return [wren.ComputeBackendSpec("subprocess", SubprocessBackend, SubprocessConfig, "local subprocesses")]
