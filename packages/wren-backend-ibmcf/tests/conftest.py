"""Fixtures: the OpenWhisk emulator, S3 server and action runner of wren-backend-openwhisk's
tests (that folder is put on sys.path), plus a local IAM token stand-in."""
from __future__ import annotations

import importlib.util
import pathlib
import sys
import uuid

import pytest

OW_TESTS = pathlib.Path(__file__).parents[2] / "wren-backend-openwhisk" / "tests"
sys.path.insert(0, str(OW_TESTS))

_spec = importlib.util.spec_from_file_location("wren_openwhisk_test_fixtures", OW_TESTS / "conftest.py")
ow = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(ow)  # type: ignore[union-attr]

from emulator import IAMStandIn, OpenWhiskEmulator  # noqa: E402

# the openwhisk suite's fixtures, shared
_isolated_wren = ow._isolated_wren
s3_server = ow.s3_server
cos_section = ow.cos_section
action_runner = ow.action_runner
runtime_image = ow.runtime_image
pytest_terminal_summary = ow.pytest_terminal_summary
_swagger_violations = ow._swagger_violations

IAM_API_KEY = "ibmcloud-" + uuid.uuid4().hex
NAMESPACE_ID = str(uuid.uuid4())
NAMESPACE_NAME = "wren-iam-ns"
CF_KEY = f"{uuid.uuid4()}:{uuid.uuid4().hex}"
CF_NAMESPACE = "myorg_dev"


@pytest.fixture(scope="session")
def iam():
    stand_in = IAMStandIn({IAM_API_KEY}, ttl=3600).start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="session")
def emulator(action_runner, iam):
    runner, _ = action_runner
    # IBM Cloud Functions' limits; its 5000 invocations per minute in windows of 1 s (a scaled clock)
    with OpenWhiskEmulator({CF_KEY: CF_NAMESPACE}, runner=runner, iam=iam, profile="ibm_cf", minute_seconds=1.0,
                           iam_namespaces={NAMESPACE_ID: NAMESPACE_NAME}, max_running=128) as emu:
        yield emu


@pytest.fixture
def fresh_emulator(emulator, iam):
    emulator.reset_counts()
    yield emulator
    emulator.reset_limits()
    iam.ttl = 3600


@pytest.fixture
def cf_section(emulator, runtime_image, iam):
    """IAM namespace."""
    return {"endpoint": emulator.url, "namespace": NAMESPACE_NAME, "namespace_id": NAMESPACE_ID,
            "api_key": IAM_API_KEY, "iam_endpoint": iam.url, "runtime": runtime_image, "runtime_timeout": 120,
            "backoff_base": 0.02, "backoff_max": 0.5}


@pytest.fixture
def executor_config(cf_section, cos_section):
    return {"wren": {"backend": "ibm_cf", "storage": "ibm_cos", "max_workers": 50, "monitor_interval": 0.2,
                     "runtime_timeout": 120},
            "ibm_cf": cf_section, "ibm_cos": cos_section}


@pytest.fixture(scope="session")
def ids():
    """The credentials and namespaces the emulator knows (test modules must not import
    conftest: their functions are shipped to workers with the module)."""
    return {"iam_api_key": IAM_API_KEY, "namespace_id": NAMESPACE_ID, "cf_key": CF_KEY, "cf_namespace": CF_NAMESPACE}
