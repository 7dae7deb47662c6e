"""Fixtures: the S3 server (SeaweedFS), the IAM and Code Engine API v2 stand-ins, and what runs
the job runs' array indices.

The stand-in runs each array index as a container of the test runtime image on the Docker
engine when one is available and the image can be built (``wren.runtimes`` +
``wren_testsupport``); otherwise it runs the same command,
``python -m wren_backend_codeengine.entry``, as a local process, and the test summary says so.
``WREN_TEST_CE_RUNNER=process|docker`` forces a choice.
"""
from __future__ import annotations

import os
import pathlib
import sys
import uuid

import pytest

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))  # ce_standin.py

from ce_standin import CodeEngineStandIn, IAMStandIn, ProcessRunner  # noqa: E402
from wren_testsupport import images  # noqa: E402
from wren_testsupport.isolation import isolated_environment  # noqa: E402
from wren_testsupport.s3server import S3Server  # noqa: E402

PROJECT = "wren-test"
API_KEY = "ce-" + uuid.uuid4().hex
#: the test runtime: wren-core, this backend (the job's command), wren-storage-cos (the workers
#: reach S3 through it) and pytest (wren.testing imports it) FROM the local Debian base image
TEST_RUNTIME = "wren-runtime-test-ce:latest"
TEST_PACKAGES = ["wren-storage-cos", "wren-backend-codeengine", "pytest"]
RUNNER_INFO: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if RUNNER_INFO:
        terminalreporter.write_sep("-", "Code Engine stand-in")
        terminalreporter.write_line(f"array indices ran as: {RUNNER_INFO['kind']} ({RUNNER_INFO['why']})")


@pytest.fixture(scope="session", autouse=True)
def _isolated_wren(tmp_path_factory):
    """No user config file and a fresh ~/.wren, for the whole session."""
    with isolated_environment(tmp_path_factory.mktemp("home")):
        yield


@pytest.fixture(scope="session")
def s3_server():
    # every S3Server has ports and sockets of its own: concurrent sessions do not clash
    with S3Server() as server:
        yield server


@pytest.fixture(scope="session")
def cos_section(s3_server):
    return s3_server.cos_section("wren-ce", retries=2)


@pytest.fixture(scope="session")
def instance_runner():
    """(runner, runtime image, engine) for the stand-in's array indices."""
    forced = os.environ.get("WREN_TEST_CE_RUNNER", "")
    engine = runner = image = None
    if forced != "process":
        engine, client, image, why = images.runtime_on_engine(TEST_RUNTIME, TEST_PACKAGES)
        if engine is not None:
            from ce_standin import DockerRunner

            runner = DockerRunner(client)
        elif forced == "docker":
            pytest.fail(f"WREN_TEST_CE_RUNNER=docker but {why}")
    else:
        why = "WREN_TEST_CE_RUNNER=process"
    if runner is None:
        from wren import runtimes

        image = runtimes.default_runtime_name()
        RUNNER_INFO.update(kind="local processes (python -m wren_backend_codeengine.entry), not containers", why=why)
        print(f"\nCode Engine stand-in: array indices run as local processes: {why}", file=sys.stderr)
        runner = ProcessRunner({image})
    else:
        RUNNER_INFO.update(kind="containers", why=why)
    yield runner, image, engine
    if engine is not None:
        runner.remove_all()
        engine.stop()


@pytest.fixture(scope="session")
def iam():
    stand_in = IAMStandIn({API_KEY}, ttl=3600).start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="session")
def standin(iam, instance_runner):
    with CodeEngineStandIn(iam, instance_runner[0], max_running=4) as api:
        api.project_id = api.add_project(PROJECT)
        yield api


@pytest.fixture
def fresh_standin(standin):
    standin.reset_faults()
    yield standin
    standin.reset_faults()


@pytest.fixture(scope="session")
def runtime_image(instance_runner):
    return instance_runner[1]


@pytest.fixture(scope="session")
def ce_section(standin, iam, runtime_image):
    return {"endpoint": standin.url, "iam_endpoint": iam.url, "project_name": PROJECT, "api_key": API_KEY,
            "runtime": runtime_image, "runtime_cpu": 0.5, "runtime_memory": 2048, "worker_processes": 2,
            "poll_interval": 0.3, "backoff_base": 0.05, "backoff_max": 1.0, "retry_timeout": 60,
            "deploy_timeout": 120, "runtime_timeout": 120}


@pytest.fixture(scope="session")
def executor_config(ce_section, cos_section):
    return {"wren": {"backend": "code_engine", "storage": "ibm_cos", "max_workers": 8, "monitor_interval": 0.2,
                     "runtime_timeout": 120},
            "code_engine": ce_section, "ibm_cos": cos_section}


@pytest.fixture(scope="session")
def ids():
    """Names the stand-in knows (test modules must not import conftest: their functions are
    shipped to workers with the module)."""
    return {"api_key": API_KEY, "project": PROJECT}
