"""The runtime CLI against the stand-in: build -> deploy -> map of 100 -> update -> delete, and a
deploy whose image cannot be pulled."""
from __future__ import annotations

import copy
import json
import time
import uuid

import pytest
import yaml

import wren
from wren import cli
from wren_backend_codeengine import job_name

from conftest import TEST_PACKAGES
from workerfuncs import square


def _use_config(tmp_path, monkeypatch, cfg) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("WREN_CONFIG_FILE", str(path))


@pytest.mark.slow
def test_cli_build_deploy_map_100_update_delete(tmp_path, monkeypatch, capsys, executor_config, instance_runner,
                                                standin):
    runner, image, _ = instance_runner
    cfg = copy.deepcopy(executor_config)
    if runner.kind == "docker":
        # a runtime of its own, built through wren.runtimes FROM the local base image
        image = f"wren-runtime-ce-cli:{uuid.uuid4().hex[:6]}"
        cfg["code_engine"].update(base_image="wren-test-base:bookworm", runtime_packages=["pytest"])
    cfg["code_engine"]["runtime"] = image
    _use_config(tmp_path, monkeypatch, cfg)
    name = job_name(image, 0.5, 1024)
    pid = standin.project_id

    if runner.kind == "docker":
        assert cli.main(["runtime", "build", image, "-b", "code_engine"]) == 0
        assert "wren-backend-codeengine" in TEST_PACKAGES
    else:
        print(f"no Docker engine: `wren runtime build` is not exercised; {image} runs as a local process")
    assert cli.main(["runtime", "deploy", image, "-b", "code_engine", "--memory", "1024", "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["job"] == name and info["python"] and info["wren"] == wren.__version__
    job = standin.jobs[(pid, name)]
    assert job["image_reference"] == image and job["scale_memory_limit"] == "1G" and job["scale_cpu_limit"] == "0.5"
    assert job["run_commands"] == ["python3", "-m", "wren_backend_codeengine.entry"]

    assert cli.main(["runtime", "list", "-b", "code_engine", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"runtime": image, "job": name, "memory": "1G"} in [{k: r[k] for k in ("runtime", "job", "memory")} for r in rows]

    assert cli.main(["runtime", "metadata", image, "-b", "code_engine"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert "wren_backend_codeengine" in meta["modules"]

    with wren.function_executor(runtime_memory=1024) as ex:
        assert ex.backend == "code_engine"
        assert ex.get_result(ex.map(square, range(100))) == [x * x for x in range(100)]
        assert ex.compute.runs_created == 1

    # update: the job definition changes in place
    tag = job["entity_tag"]
    cfg["code_engine"].update(worker_processes=3, environment={"TEAM": "wren"})
    _use_config(tmp_path, monkeypatch, cfg)
    assert cli.main(["runtime", "update", image, "-b", "code_engine", "--memory", "1024"]) == 0
    job = standin.jobs[(pid, name)]
    env = {e["name"]: e["value"] for e in job["run_env_variables"]}
    assert job["entity_tag"] != tag and env["WREN_WORKER_CONCURRENCY"] == "3" and env["TEAM"] == "wren"

    assert cli.main(["runtime", "delete", image, "-b", "code_engine", "--memory", "1024"]) == 0
    assert (pid, name) not in standin.jobs
    assert cli.main(["clean", "-b", "code_engine", "--json"]) == 0
    assert not [k for k in standin.secrets if k[0] == pid and k[1].startswith(("wren-run-", "wren-meta-"))]


def test_deploy_of_an_unpullable_image_fails_in_time_with_code_engines_reason(tmp_path, monkeypatch, capsys,
                                                                              executor_config):
    cfg = copy.deepcopy(executor_config)
    cfg["code_engine"].update(runtime="wren-runtime-missing:404", deploy_timeout=30)
    _use_config(tmp_path, monkeypatch, cfg)
    t = time.monotonic()
    assert cli.main(["runtime", "deploy", "wren-runtime-missing:404", "-b", "code_engine"]) != 0
    assert time.monotonic() - t < 30
    msg = capsys.readouterr().err
    assert "cannot start job run" in msg and 'ImagePullBackOff: Back-off pulling image "wren-runtime-missing:404"' in msg
