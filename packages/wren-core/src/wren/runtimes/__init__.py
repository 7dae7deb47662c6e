"""Runtime images: what the container backends (docker, openwhisk, ibm_cf, knative) share.

A runtime is a container image whose entry point is ``python3 -m wren.worker`` (port 8080).
This package builds one and learns what it holds:

- :func:`default_runtime_name` — ``wren-runtime-py311:0.1.0``: one per Python minor version,
  tagged with the wren version, because cloudpickle needs the same minor version on both sides.
- :func:`build_image` — a build context with wheels of wren-core and its dependencies made on
  the client (``pip wheel``; nothing is downloaded inside the build), installed in a venv at
  ``/opt/wren`` with ``pip install --no-index --find-links``, ``FROM`` a configurable base image
  (default ``python:3.X-slim``). Extra packages come as wheels too. A user's Dockerfile may
  start ``FROM`` the default runtime (built first when missing) and ``COPY wheels/`` itself.
- :func:`image_metadata` — Python and wren versions and importable modules, read from the
  image itself (a one-shot container), cached in ``~/.wren/runtimes/<name>.json`` by image id.
- :func:`check_compatible` — raises :class:`wren.errors.VersionMismatchError` naming the
  ``wren runtime build`` command that fixes it.
- :func:`runtime_lock` — a file lock, so that a runtime missing on first use is built or
  deployed once even when several clients start at the same time.

The Docker SDK is imported only inside the functions that need it (:func:`docker_sdk`), so
``pip install wren-core`` alone never needs it.
"""
from __future__ import annotations

from wren.runtimes.build import (
    DEFAULT_PORT,
    RUNTIME_LABEL,
    WHEELS_DIR,
    build_context,
    build_image,
    default_base_image,
    default_dockerfile,
    default_runtime_name,
    docker_sdk,
    wheel_requirements,
)
from wren.runtimes.metadata import (
    MetadataCache,
    check_compatible,
    image_metadata,
    metadata_command,
    parse_metadata_output,
    runtime_lock,
    runtimes_dir,
)

__all__ = [
    "DEFAULT_PORT",
    "RUNTIME_LABEL",
    "WHEELS_DIR",
    "MetadataCache",
    "build_context",
    "build_image",
    "check_compatible",
    "default_base_image",
    "default_dockerfile",
    "default_runtime_name",
    "docker_sdk",
    "image_metadata",
    "metadata_command",
    "parse_metadata_output",
    "runtime_lock",
    "runtimes_dir",
    "wheel_requirements",
]
