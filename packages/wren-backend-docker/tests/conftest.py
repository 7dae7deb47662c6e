"""Fixtures: a real Docker engine (testsupport starts a private dockerd when none answers),
the debootstrap base image, and the default wren runtime built FROM it."""
from __future__ import annotations


import pytest
from wren_testsupport import images
from wren_testsupport.docker_engine import docker_engine_fixture
from wren_testsupport.isolation import isolated_environment

docker_engine = docker_engine_fixture()


@pytest.fixture(autouse=True, scope="session")
def _isolated_wren(tmp_path_factory):
    """No user config file, storage and ~/.wren in fresh folders, for the whole session."""
    root = tmp_path_factory.mktemp("wren-storage")
    # runtimes built in tests start from the local base image (no registry here)
    with isolated_environment(tmp_path_factory.mktemp("home"), {"WREN_LOCALHOST__STORAGE_ROOT": root,
                                                                 "WREN_DOCKER__BASE_IMAGE": images.BASE_IMAGE}):
        yield root


@pytest.fixture(scope="session")
def docker_client(docker_engine):
    return docker_engine.client()


@pytest.fixture(scope="session")
def runtime_image(docker_client):
    """The default runtime (wren-runtime-py3X:<version>) built FROM the debootstrap base."""
    try:
        # pytest inside: unpickling wren.testing.funcs imports wren.testing, which imports pytest
        return images.ensure_test_runtime(docker_client, packages=["pytest"])
    except images.ImageUnavailable as exc:
        pytest.skip(f"no base image: {exc}")
