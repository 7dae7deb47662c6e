"""Building runtime images: the default Dockerfile, a build context of wheels, ``docker build``."""
from __future__ import annotations

import importlib.metadata as importlib_metadata
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from wren.errors import ConfigError, WrenError
from wren.version import PYTHON_VERSION as _PY

logger = logging.getLogger("wren.runtimes")

DEFAULT_PORT = 8080
#: Folder of the build context holding the wheels (a user's Dockerfile may COPY it too).
WHEELS_DIR = "wheels"
#: Label on every image wren builds (value: the name it was built as); ``list_runtimes`` filters on it.
RUNTIME_LABEL = "wren.runtime"


def docker_sdk() -> Any:
    """The ``docker`` module, or an error that says how to install it."""
    try:
        import docker
    except ImportError:
        raise WrenError(
            "building or inspecting runtime images needs the Docker SDK: pip install docker "
            "(or install the backend's distribution, e.g. pip install wren-backend-docker)"
        ) from None
    return docker


def default_runtime_name(python: str | None = None, version: str | None = None) -> str:
    """``wren-runtime-py311:<wren version>`` for this client's (or the given) Python."""
    from wren.version import __version__

    py = python or _PY
    return f"wren-runtime-py{py.replace('.', '')}:{version or __version__}"


def default_base_image(python: str | None = None) -> str:
    """The official slim image of the Python minor version (``python:3.11-slim``)."""
    return f"python:{python or _PY}-slim"


def default_dockerfile(base_image: str, requirements: Sequence[str] = ("wren-core",)) -> str:
    """The default runtime: a venv at /opt/wren with wheels from the context; no network."""
    reqs = " ".join(f'"{r}"' for r in requirements)
    return f"""\
FROM {base_image}
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    VIRTUAL_ENV=/opt/wren PATH=/opt/wren/bin:$PATH PORT={DEFAULT_PORT}
RUN python3 -m venv /opt/wren
COPY {WHEELS_DIR}/ /tmp/wren-wheels/
RUN pip install --no-cache-dir --no-index --find-links /tmp/wren-wheels {reqs} && rm -rf /tmp/wren-wheels
WORKDIR /tmp
EXPOSE {DEFAULT_PORT}
ENTRYPOINT ["python3", "-m", "wren.worker"]
EXPOSE {DEFAULT_PORT}
"""


def _local_source(dist_name: str) -> str | None:
    """The source folder of an installed distribution when it came from a local checkout
    (editable or ``pip install <path>``), else ``None``."""
    try:
        dist = importlib_metadata.distribution(dist_name)
    except importlib_metadata.PackageNotFoundError:
        return None
    raw = dist.read_text("direct_url.json")
    if raw:
        try:
            url = json.loads(raw).get("url", "")
        except ValueError:
            url = ""
        if url.startswith("file://"):
            path = unquote(urlparse(url).path)
            if os.path.isfile(os.path.join(path, "pyproject.toml")):
                return path
    return None


def wheel_requirements(packages: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """What to turn into wheels: (pip arguments, requirement names to install in the image).

    wren-core comes from its local checkout when it was installed from one, else from the
    package index at this client's version. ``packages`` are pip requirement strings or paths
    of local projects (``./mylib``); installed first-party plugins may be named by
    distribution (``wren-storage-cos``) and are taken from their checkout likewise.
    """
    from wren.version import __version__

    args: list[str] = []
    names: list[str] = []
    for req in ("wren-core", *_with_first_party_dependencies(packages)):
        if os.path.isdir(req) or req.startswith((".", "/")):
            path = os.path.abspath(req)
            if not os.path.isfile(os.path.join(path, "pyproject.toml")) and not os.path.isfile(os.path.join(path, "setup.py")):
                raise ConfigError(f"runtime package {req!r} is a folder without pyproject.toml or setup.py")
            args.append(path)
            names.append(_project_name(path))
            continue
        name = re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0]
        local = _local_source(name)
        if local is not None and req == name:
            args.append(local)
        elif req == "wren-core":
            args.append(f"wren-core=={__version__}")
        elif req == name and name.startswith("wren-") and _installed_version(name):
            args.append(f"{name}=={_installed_version(name)}")  # a first-party plugin: the client's version
        else:
            args.append(req)
        names.append(req if local is None else name)
    return args, names


def _with_first_party_dependencies(packages: Sequence[str]) -> list[str]:
    """``packages`` plus the first-party distributions (``wren-*``) that installed ones named
    there depend on (wren-backend-ibmcf needs wren-backend-openwhisk), so that they come from
    the same place (a local checkout, or this client's version) rather than the index."""
    out = list(packages)
    seen = {re.split(r"[\[<>=!~; ]", p, maxsplit=1)[0] for p in out} | {"wren-core"}
    i = 0
    while i < len(out):
        try:
            requires = importlib_metadata.requires(out[i]) or []
        except (importlib_metadata.PackageNotFoundError, ValueError):  # not installed, a path, a specifier
            requires = []
        for dep in requires:
            name = re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0]
            if name.startswith("wren-") and name not in seen and "extra ==" not in dep:
                seen.add(name)
                out.append(name)
        i += 1
    return out


def _installed_version(dist_name: str) -> str | None:
    try:
        return importlib_metadata.version(dist_name)
    except importlib_metadata.PackageNotFoundError:
        return None


def _project_name(path: str) -> str:
    text = Path(path, "pyproject.toml").read_text() if Path(path, "pyproject.toml").exists() else ""
    m = re.search(r'(?m)^name\s*=\s*"([^"]+)"', text)
    return m.group(1) if m else os.path.basename(path.rstrip("/"))


def _pip(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise WrenError(f"preparing wheels failed: {' '.join(cmd)}\n{(proc.stdout + proc.stderr)[-3000:]}")


def download_wheels(dest: str, pip_args: Sequence[str], python: str | None = None) -> list[str]:
    """Wheels for ``pip_args`` and their dependencies into ``dest`` (made on this host).

    For another Python minor version than the client's, local projects are built without
    dependencies and everything else is downloaded as binary wheels for that version.
    """
    os.makedirs(dest, exist_ok=True)
    if python in (None, _PY):
        _pip(["wheel", "--quiet", "--wheel-dir", dest, *pip_args])
    else:
        local = [a for a in pip_args if os.path.isdir(a)]
        if local:
            _pip(["wheel", "--quiet", "--no-deps", "--wheel-dir", dest, *local])
        built = [str(p) for p in Path(dest).glob("*.whl")]
        rest = [a for a in pip_args if not os.path.isdir(a)]
        machine = platform.machine() or "x86_64"
        _pip([
            "download", "--quiet", "--dest", dest, "--find-links", dest, "--only-binary=:all:",
            "--python-version", python, "--implementation", "cp",
            "--platform", f"manylinux2014_{machine}", "--platform", f"manylinux_2_28_{machine}",
            "--platform", f"linux_{machine}", *built, *rest,
        ])
    return sorted(p.name for p in Path(dest).glob("*.whl"))


def build_context(
    directory: str,
    base_image: str | None = None,
    dockerfile: str | None = None,
    packages: Sequence[str] = (),
    python: str | None = None,
) -> Path:
    """Fill ``directory`` with a Dockerfile (the default one, or the text/path given) and
    ``wheels/``; returns the Dockerfile's path."""
    pip_args, names = wheel_requirements(packages)
    download_wheels(os.path.join(directory, WHEELS_DIR), pip_args, python)
    if dockerfile is None:
        text = default_dockerfile(base_image or default_base_image(python), ["wren-core", *names[1:]])
    elif "\n" not in dockerfile and os.path.isfile(dockerfile):
        text = Path(dockerfile).read_text()
    else:
        text = dockerfile
    path = Path(directory, "Dockerfile")
    path.write_text(text)
    return path


def _from_images(dockerfile_text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"(?mi)^\s*FROM\s+(?:--\S+\s+)*(\S+)", dockerfile_text)]


def build_image(
    client: Any,
    name: str,
    base_image: str | None = None,
    dockerfile: str | None = None,
    packages: Sequence[str] = (),
    python: str | None = None,
    pull: bool = False,
) -> str:
    """Build runtime image ``name`` with ``client`` (a ``docker.DockerClient``); returns its id.

    ``dockerfile`` (a path or the text) replaces the default; when it starts ``FROM`` the
    default runtime and that image is missing, the default runtime is built first.
    """
    errors = docker_sdk().errors
    with tempfile.TemporaryDirectory(prefix="wren-runtime-build-") as ctx:
        df = build_context(ctx, base_image, dockerfile, packages, python)
        default = default_runtime_name(python)
        if dockerfile is not None and default in _from_images(df.read_text()) and name != default:
            try:
                client.images.get(default)
            except errors.ImageNotFound:
                logger.info("building %s first (the Dockerfile starts FROM it)", default)
                build_image(client, default, base_image=base_image, packages=(), python=python)
        log: list[str] = []
        image_id = None
        try:
            from wren.version import __version__

            labels = {RUNTIME_LABEL: name, "wren.version": __version__}
            for chunk in client.api.build(path=ctx, tag=name, rm=True, forcerm=True, pull=pull, decode=True, labels=labels):
                if "stream" in chunk:
                    log.append(chunk["stream"])
                    logger.debug("build %s: %s", name, chunk["stream"].rstrip())
                if "error" in chunk:
                    raise WrenError(
                        f"building runtime {name!r} failed: {chunk['error'].strip()}\n{''.join(log)[-3000:]}"
                    )
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
        except errors.APIError as exc:
            raise WrenError(f"building runtime {name!r} failed: {exc}\n{''.join(log)[-3000:]}") from None
        if image_id is None:
            image_id = client.images.get(name).id
    # the image changed: forget metadata cached for this name
    from wren.runtimes.metadata import MetadataCache

    MetadataCache().delete(name)
    shutil.rmtree(ctx, ignore_errors=True)
    return image_id
