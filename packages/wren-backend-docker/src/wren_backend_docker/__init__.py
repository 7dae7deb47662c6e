"""Wren's docker compute backend: calls run in a pool of long-lived worker containers.

    import wren
    fexec = wren.docker_executor()      # backend="docker"; see the package README for setup
"""
from wren_backend_docker.backend import DockerBackend
from wren_backend_docker.config import DockerConfig

__version__ = "0.1.0"
__all__ = ["DockerBackend", "DockerConfig", "__version__"]
