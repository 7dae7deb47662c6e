"""Fixtures: the S3 server (SeaweedFS), the OpenWhisk emulator and what runs its actions.

The emulator runs each action's image on the real Docker engine when one is available and the
runtime image can be built (``wren.runtimes`` + ``wren_testsupport``); otherwise it runs the
same entry point, ``python -m wren.worker``, as a local process. Which one is used is printed in
the test summary. ``WREN_TEST_OPENWHISK_RUNNER=process|docker`` forces a choice.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
import uuid

import pytest

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))  # emulator.py

from emulator import IAMStandIn, NoopRunner, OpenWhiskEmulator, ProcessRunner  # noqa: E402,F401
from owspec import CHECKER  # noqa: E402
from wren_testsupport import images  # noqa: E402
from wren_testsupport.isolation import isolated_environment  # noqa: E402
from wren_testsupport.s3server import S3Server  # noqa: E402

API_KEY = f"{uuid.uuid4()}:{uuid.uuid4().hex}{uuid.uuid4().hex}"
NAMESPACE = "guest"

#: the test runtime: wren-core and wren-storage-cos FROM the local Debian base image
TEST_RUNTIME = "wren-runtime-test-cos:latest"
#: how actions ran, for the summary line
RUNNER_INFO: dict[str, str] = {}


#: The session emulator's platform and its rate-limit "minute" (a scaled clock: the stock
#: profile's 60 invocations per window, but windows of this many seconds, so that suites do not
#: wait real minutes; the per-minute tests use their own emulators and windows)
SESSION_PROFILE = "stock"
SESSION_MINUTE_SECONDS = 1.0


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if RUNNER_INFO or CHECKER.counts["responses"]:
        terminalreporter.write_sep("-", "OpenWhisk emulator")
    if RUNNER_INFO:
        terminalreporter.write_line(f"actions ran as: {RUNNER_INFO['kind']} ({RUNNER_INFO['why']})")
    if CHECKER.counts["responses"]:
        c, src = CHECKER.counts, CHECKER.source
        terminalreporter.write_line(
            f"swagger validation (apache/openwhisk {src['path']} @ {src['commit'][:12]}): "
            f"{c['requests']} request bodies and {c['responses']} answers checked, "
            f"{c['undocumented']} answers with a status the swagger leaves out "
            f"({', '.join(sorted(f'{m} {p} {s}' for m, p, s in CHECKER.undocumented))})")


@pytest.fixture(autouse=True)
def _swagger_violations():
    """Every request body and answer of every emulator is checked against the swagger: a test
    that caused a violation fails."""
    CHECKER.take_violations()
    yield
    found = CHECKER.take_violations()
    if found:
        pytest.fail("the OpenWhisk API swagger was violated:\n" + "\n".join(f"{w}: {p}" for w, p in found[:10]),
                    pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _isolated_wren(tmp_path_factory):
    """No user config file, for the whole session."""
    with isolated_environment(tmp_path_factory.mktemp("home")):
        yield


@pytest.fixture(scope="session")
def s3_server():
    with S3Server() as server:
        yield server


@pytest.fixture(scope="session")
def cos_section(s3_server):
    return s3_server.cos_section("wren-ow", retries=2)


def _docker_runner():
    """(runner, runtime image, engine, why) on the Docker engine, or Nones and why not."""
    # the workers reach S3 through the ibm_cos storage plugin, and remote invokers run the
    # backend plugins: they must be in the image
    packages = ["wren-storage-cos", "wren-backend-openwhisk", "pytest"]
    if importlib.util.find_spec("wren_backend_ibmcf"):
        packages.insert(2, "wren-backend-ibmcf")
    engine, client, image, why = images.runtime_on_engine(TEST_RUNTIME, packages)
    if engine is None:
        return None, None, None, why
    from emulator import DockerRunner

    return DockerRunner(client), image, engine, why


@pytest.fixture(scope="session")
def action_runner():
    """(runner, runtime image name) for the emulator's actions."""
    forced = os.environ.get("WREN_TEST_OPENWHISK_RUNNER", "")
    engine = None
    if forced != "process":
        runner, image, engine, why = _docker_runner()
        if runner is None and forced == "docker":
            pytest.fail(f"WREN_TEST_OPENWHISK_RUNNER=docker but {why}")
    else:
        runner, image, why = None, None, "WREN_TEST_OPENWHISK_RUNNER=process"
    if runner is None:
        from wren_backend_openwhisk.backend import default_runtime_name

        RUNNER_INFO.update(kind="local processes (python -m wren.worker), not containers", why=why)
        print(f"\nOpenWhisk emulator: actions run as local processes: {why}", file=sys.stderr)
        runner, image = ProcessRunner(), default_runtime_name()
    else:
        RUNNER_INFO.update(kind="containers", why=why)
    yield runner, image
    runner.close()  # the emulator closed it already, unless the emulator never started
    if engine is not None:
        engine.stop()


@pytest.fixture(scope="session")
def emulator(action_runner):
    runner, _ = action_runner
    with OpenWhiskEmulator({API_KEY: NAMESPACE}, runner=runner, max_running=128, profile=SESSION_PROFILE,
                           minute_seconds=SESSION_MINUTE_SECONDS) as emu:
        yield emu


@pytest.fixture
def fresh_emulator(emulator):
    """The session's emulator with default behaviour restored after the test."""
    emulator.reset_counts()
    yield emulator
    emulator.reset_limits()


@pytest.fixture(scope="session")
def runtime_image(action_runner):
    return action_runner[1]


@pytest.fixture
def ow_section(emulator, runtime_image):
    return {"endpoint": emulator.url, "namespace": NAMESPACE, "api_key": API_KEY, "runtime": runtime_image,
            "runtime_timeout": 120, "backoff_base": 0.02, "backoff_max": 0.5}


@pytest.fixture
def executor_config(ow_section, cos_section):
    return {"wren": {"backend": "openwhisk", "storage": "ibm_cos", "max_workers": 50, "monitor_interval": 0.2,
                     "runtime_timeout": 120},
            "openwhisk": ow_section, "ibm_cos": cos_section}
