"""Base images for tests, made locally (no registry is reachable from these machines).

:func:`ensure_base_image` gives ``wren-test-base:bookworm``: Debian bookworm ``minbase`` with
``python3`` and ``python3-venv`` (Python 3.11, the host's), made with ``debootstrap`` from the
Debian mirror in this machine's apt sources and loaded with ``docker import``. Two caches make
it cheap after the first time: the private engine's data root (see
:func:`wren_testsupport.docker_engine.cache_dir`) keeps the image itself, and a tarball of the
root filesystem next to it is re-imported (a few seconds) into an engine that lacks the image.
A file lock makes concurrent sessions build it once.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from wren_testsupport.docker_engine import cache_dir

logger = logging.getLogger("wren_testsupport.images")

BASE_IMAGE = "wren-test-base:bookworm"
SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"

#: Seconds the last build steps took (for reports): {"debootstrap": ..., "import": ...}
timings: dict[str, float] = {}


class ImageUnavailable(RuntimeError):
    """The base image cannot be made here (the message says why)."""


def debian_mirror() -> str:
    """The Debian mirror from this machine's apt sources (deb822 ``.sources`` or ``.list``)."""
    files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.sources")),
             *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]
    for path in files:
        try:
            text = pathlib.Path(path).read_text()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                uris = re.search(r"(?mi)^URIs:\s*(\S+)", stanza)
                suites = re.search(r"(?mi)^Suites:\s*(.+)$", stanza)
                if uris and suites and SUITE in suites.group(1).split() and "security" not in uris.group(1):
                    return uris.group(1).rstrip("/")
        else:
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and m.group(2) == SUITE and "security" not in m.group(1):
                    return m.group(1).rstrip("/")
    return FALLBACK_MIRROR


@contextlib.contextmanager
def _file_lock(path: pathlib.Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _has_image(client: Any, name: str) -> bool:
    import docker.errors

    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def rootfs_tarball(mirror: str | None = None) -> pathlib.Path:
    """The cached root filesystem tarball; made with debootstrap when missing (about 40 s)."""
    tarball = cache_dir() / f"rootfs-{SUITE}-minbase-python3.tar"
    if tarball.exists():
        return tarball
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageUnavailable("debootstrap is not installed (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise ImageUnavailable("debootstrap needs root")
    mirror = mirror or debian_mirror()
    work = tempfile.mkdtemp(prefix="wren-rootfs-", dir=str(cache_dir()))
    try:
        target = os.path.join(work, "rootfs")
        t = time.perf_counter()
        proc = subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3,python3-venv", SUITE, target, mirror],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise ImageUnavailable(f"debootstrap from {mirror} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        # apt's package lists and caches are not needed in a runtime
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in pathlib.Path(target, junk).glob("*"):
                if p.is_file():
                    p.unlink()
        timings["debootstrap"] = time.perf_counter() - t
        tmp_tar = os.path.join(work, "rootfs.tar")
        subprocess.run(["tar", "-C", target, "-cf", tmp_tar, "."], check=True)
        os.replace(tmp_tar, tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def ensure_base_image(client: Any, name: str = BASE_IMAGE) -> str:
    """Make sure the engine behind ``client`` (a docker.DockerClient) has the base image."""
    if _has_image(client, name):
        return name
    with _file_lock(cache_dir() / "base-image.lock"):
        if _has_image(client, name):
            return name
        tarball = rootfs_tarball()
        t = time.perf_counter()
        repo, _, tag = name.partition(":")
        # a file path is sent with its length (the chunked stream variant is refused by dockerd 20.10)
        client.api.import_image(src=str(tarball), repository=repo, tag=tag or "latest", changes=['CMD ["python3"]'])
        timings["import"] = time.perf_counter() - t
        if not _has_image(client, name):
            raise ImageUnavailable(f"docker import did not produce {name}")
    logger.info("base image %s ready (%s)", name, timings)
    return name


def ensure_test_runtime(client: Any, base: str = BASE_IMAGE, name: str | None = None, **options: Any) -> str:
    """The default wren runtime image built FROM the test base image (cached by the engine:
    rebuilt only when wren-core's wheel changes, as Docker's layer cache decides)."""
    from wren import runtimes

    ensure_base_image(client, base)
    name = name or runtimes.default_runtime_name()
    with runtimes.runtime_lock(f"test-build-{name}"):
        runtimes.build_image(client, name, base_image=base, **options)
    return name


def runtime_on_engine(name: str, packages: list[str]) -> tuple[Any, Any, str | None, str]:
    """``(engine, docker client, image, why)``: the test runtime ``name`` with ``packages``
    built on a Docker engine (found, or started), ``DOCKER_HOST`` pointing at it (for
    ``wren runtime build``); or ``(None, None, None, why not)`` for suites that fall back to
    local processes and say why."""
    try:
        import docker  # noqa: F401
        from wren import runtimes  # noqa: F401
        from wren_testsupport import docker_engine
    except ImportError as exc:
        return None, None, None, f"no Docker runtime support here ({exc})"
    engine = docker_engine.find_or_start_engine()
    if not engine:
        return None, None, None, engine.reason
    try:
        client = engine.client()
        image = ensure_test_runtime(client, name=name, packages=packages)
    except Exception as exc:  # no base image, build failure: say why
        engine.stop()
        return None, None, None, f"the runtime image could not be built: {type(exc).__name__}: {exc}"
    os.environ["DOCKER_HOST"] = engine.host
    return engine, client, image, f"image {image} on the Docker engine at {engine.host}"
