"""The knative backend end to end through the stand-in: the runtime CLI (build, deploy, list,
update, delete) with 100 calls in between, a deploy that cannot succeed, a service that
disappears under running calls."""
from __future__ import annotations

import copy
import json
import re
import time
import uuid

import pytest
import yaml

import wren
from wren import cli
from wren.errors import InvocationError
from wren_backend_knative.services import service_name

from conftest import NAMESPACE, TEST_PACKAGES


def square(x):
    return x * x


def _cfg(executor_config, **kn):
    cfg = copy.deepcopy(executor_config)
    cfg["knative"].update(kn)
    return cfg


def _use_config(tmp_path, monkeypatch, cfg) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("WREN_CONFIG_FILE", str(path))


def test_cli_build_deploy_map_100_update_delete(tmp_path, monkeypatch, capsys, executor_config, pod_runner, standin):
    runner, image = pod_runner
    cfg = copy.deepcopy(executor_config)
    if runner.kind == "docker":
        # a runtime of its own, built through wren.runtimes FROM the local base image
        image = f"wren-runtime-kn-cli:{uuid.uuid4().hex[:6]}"
        cfg["knative"].update(base_image="wren-test-base:bookworm", runtime_packages=TEST_PACKAGES)
    cfg["knative"]["runtime"] = image
    _use_config(tmp_path, monkeypatch, cfg)
    name = service_name(image, 384)

    if runner.kind == "docker":
        assert cli.main(["runtime", "build", image]) == 0
    else:
        print(f"no Docker engine: `wren runtime build` is not exercised; {image} runs as a local process")
    assert cli.main(["runtime", "deploy", image, "--memory", "384", "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["service"] == name and info["python"] and info["wren"] == wren.__version__
    assert info["url"] == standin.ingress_url  # calls go through the ingress, with the service's Host
    assert standin.get(NAMESPACE, name)["status"]["url"] == f"http://{name}.{NAMESPACE}.example.invalid"
    svc = standin.get(NAMESPACE, name)
    container = svc["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == image and container["resources"]["limits"]["memory"] == "384Mi"
    assert runner.containers(name), "the controller started no pod"

    assert cli.main(["runtime", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"runtime": image, "memory": 384, "service": name, "ready": True} in [
        {k: r[k] for k in ("runtime", "memory", "service", "ready")} for r in rows]

    with wren.function_executor(runtime_memory=384) as ex:
        assert ex.backend == "knative"
        assert ex.get_result(ex.map(square, range(100))) == [x * x for x in range(100)]
        assert ex.compute.requests_sent == 100

    # update: a new generation, a new revision, the old pod replaced
    cfg["knative"].update(container_concurrency=4, min_scale=1)
    _use_config(tmp_path, monkeypatch, cfg)
    assert cli.main(["runtime", "update", image, "--memory", "384"]) == 0
    svc = standin.get(NAMESPACE, name)
    assert svc["metadata"]["generation"] == 2 and svc["status"]["latestReadyRevisionName"] == f"{name}-00002"
    assert svc["spec"]["template"]["spec"]["containerConcurrency"] == 4
    assert svc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "1"

    assert cli.main(["runtime", "delete", image, "--memory", "384"]) == 0
    assert standin.get(NAMESPACE, name) is None
    deadline = time.monotonic() + 30
    while runner.containers(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runner.containers(name) == [], "the pod outlived its service"


def test_failed_deploy_is_clear_and_bounded(tmp_path, monkeypatch, capsys, executor_config):
    cfg = _cfg(executor_config, runtime="wren-runtime-missing:404", ready_timeout=30)
    _use_config(tmp_path, monkeypatch, cfg)
    t = time.monotonic()
    assert cli.main(["runtime", "deploy", "wren-runtime-missing:404"]) != 0
    assert time.monotonic() - t < 30
    msg = capsys.readouterr().err
    assert "failed to become Ready" in msg and 'Unable to fetch image "wren-runtime-missing:404"' in msg
    assert "RevisionMissing" in msg

    # through an executor: the first map fails before anything runs, with the same message
    t = time.monotonic()
    with wren.function_executor(config=cfg) as ex, pytest.raises(InvocationError, match="Unable to fetch image"):
        ex.map(square, range(3))
    assert time.monotonic() - t < 30


def test_deploy_that_never_becomes_ready_stops_at_the_deadline(tmp_path, monkeypatch, capsys, executor_config, standin):
    cfg = _cfg(executor_config, runtime="wren-runtime-slow-pull:1", ready_timeout=2)
    _use_config(tmp_path, monkeypatch, cfg)
    standin.hang_on_missing_image = True
    try:
        t = time.monotonic()
        assert cli.main(["runtime", "deploy", "wren-runtime-slow-pull:1"]) != 0
        assert time.monotonic() - t < 8
        assert re.search(r"did not become Ready within 2 s \(knative.ready_timeout\).*pulling image", capsys.readouterr().err)
    finally:
        standin.hang_on_missing_image = False


def test_calls_fail_clearly_when_the_service_is_gone(executor_config, standin):
    """The pods disappear behind the client's back (the ingress has no healthy upstream: 503):
    the calls' futures fail with an InvocationError after knative.retry_timeout, not a hang."""
    cfg = _cfg(executor_config, runtime_memory=640, retry_timeout=1.0)
    name = service_name(cfg["knative"]["runtime"], 640)
    with wren.function_executor(config=cfg) as ex:
        ex.get_result(ex.call_async(square, 3))
        standin.endpoints.pop((NAMESPACE, name)).stop()
        futures = ex.map(square, range(5))
        t = time.monotonic()
        ex.wait(futures, throw_except=False, timeout=60)
        assert time.monotonic() - t < 30 and all(f.error for f in futures)
        with pytest.raises(InvocationError, match=r"could not be delivered .* within 1 s .*HTTP 503: no healthy upstream"):
            ex.get_result(futures[:1])
    standin.objects.pop((NAMESPACE, name), None)
