"""Fixtures: the S3 server (SeaweedFS), the Kubernetes API stand-in with its Knative controller,
and what runs the services' pods.

The controller runs each revision's image on the real Docker engine when one is available and
the runtime image can be built (``wren.runtimes`` + ``wren_testsupport``); otherwise it runs the
same entry point, ``python -m wren.worker``, as a local process, and says so in the test
summary. ``WREN_TEST_KNATIVE_RUNNER=process|docker`` forces a choice.
"""
from __future__ import annotations

import os
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))  # k8s_standin.py

from k8s_standin import KubeStandIn, ProcessRunner  # noqa: E402
from wren_testsupport import images  # noqa: E402
from wren_testsupport.isolation import isolated_environment  # noqa: E402
from wren_testsupport.s3server import S3Server  # noqa: E402

NAMESPACE = "wren-test"
#: the test runtime: wren-core, wren-storage-cos (the workers reach S3 through it) and pytest
#: FROM the local Debian base image. pytest because the conformance suite's functions live in
#: ``wren.testing.funcs``, and importing ``wren.testing`` imports pytest (see the report).
TEST_RUNTIME = "wren-runtime-test-knative:latest"
TEST_PACKAGES = ["wren-storage-cos", "pytest"]
RUNNER_INFO: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    # imported here, not at the top: test modules that import this one are shipped to the pods,
    # whose runtime has no jsonschema
    from knspec import CHECKER

    if RUNNER_INFO or CHECKER.counts["bodies"]:
        terminalreporter.write_sep("-", "Knative stand-in")
    if RUNNER_INFO:
        terminalreporter.write_line(f"service pods ran as: {RUNNER_INFO['kind']} ({RUNNER_INFO['why']})")
    if CHECKER.counts["bodies"]:
        src = CHECKER.source
        terminalreporter.write_line(
            f"CRD schema validation (knative/serving {src['path']} @ {src['commit'][:12]}): "
            f"{CHECKER.counts['bodies']} Service bodies received and {CHECKER.counts['answers']} Service objects "
            "answered checked")


@pytest.fixture(autouse=True)
def _crd_violations():
    """Every Service body the stand-in receives is checked against the CRD's schema: a test
    that caused a violation (or sent fields a real API server would prune) fails."""
    from knspec import CHECKER

    CHECKER.take_violations()
    yield
    found = CHECKER.take_violations()
    if found:
        pytest.fail("the Knative Service CRD schema was violated:\n" + "\n".join(f"{w}: {p}" for w, p in found[:10]),
                    pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _isolated_wren(tmp_path_factory):
    """No user config file and a fresh ~/.wren, for the whole session."""
    with isolated_environment(tmp_path_factory.mktemp("home"), unset=["KUBECONFIG"]):
        yield


@pytest.fixture(scope="session")
def s3_server():
    with S3Server() as server:
        yield server


@pytest.fixture(scope="session")
def cos_section(s3_server):
    return s3_server.cos_section("wren-kn", retries=2)


def _docker_runner():
    """(runner, runtime image, engine, why) on the Docker engine, or Nones and why not."""
    # the workers reach S3 through the ibm_cos storage plugin: it must be in the image
    engine, client, image, why = images.runtime_on_engine(TEST_RUNTIME, TEST_PACKAGES)
    if engine is None:
        return None, None, None, why
    from k8s_standin import DockerRunner

    return DockerRunner(client), image, engine, why


@pytest.fixture(scope="session")
def pod_runner():
    """(runner, runtime image) for the stand-in's pods."""
    forced = os.environ.get("WREN_TEST_KNATIVE_RUNNER", "")
    engine = None
    runner = image = None
    if forced != "process":
        runner, image, engine, why = _docker_runner()
        if runner is None and forced == "docker":
            pytest.fail(f"WREN_TEST_KNATIVE_RUNNER=docker but {why}")
    else:
        why = "WREN_TEST_KNATIVE_RUNNER=process"
    if runner is None:
        from wren import runtimes

        image = runtimes.default_runtime_name()
        RUNNER_INFO.update(kind="local processes (python -m wren.worker), not containers", why=why)
        print(f"\nKnative stand-in: pods run as local processes: {why}", file=sys.stderr)
        runner = ProcessRunner({image})
    else:
        RUNNER_INFO.update(kind="containers", why=why)
    yield runner, image
    if engine is not None:
        engine.stop()


@pytest.fixture(scope="session")
def standin(pod_runner):
    with KubeStandIn(pod_runner[0], route_by_host=True) as api:
        yield api


@pytest.fixture(scope="session")
def runtime_image(pod_runner):
    return pod_runner[1]


@pytest.fixture(scope="session")
def kubeconfig(standin, tmp_path_factory):
    return standin.write_kubeconfig(str(tmp_path_factory.mktemp("kube") / "config"), NAMESPACE)


@pytest.fixture(scope="session")
def kn_section(kubeconfig, runtime_image, standin):
    return {"kubeconfig": kubeconfig, "runtime": runtime_image, "ready_timeout": 90, "runtime_timeout": 120,
            "backoff_base": 0.02, "backoff_max": 0.5, "ingress_endpoint": standin.ingress_url}


@pytest.fixture(scope="session")
def executor_config(kn_section, cos_section):
    return {"wren": {"backend": "knative", "storage": "ibm_cos", "max_workers": 50, "monitor_interval": 0.2,
                     "runtime_timeout": 120},
            "knative": kn_section, "ibm_cos": cos_section}

