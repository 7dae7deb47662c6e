"""ibm_cf specifics: IAM tokens (exchange, renewal, thread safety), X-Namespace-Id, Cloud Foundry
keys, clear credential errors, the runtime CLI end to end, price."""
from __future__ import annotations

import concurrent.futures
import copy
import json
import time
import uuid

import pytest
import yaml

import wren
from wren import cli
from wren.errors import ConfigError, InvocationError
from wren_backend_ibmcf import IAMTokenAuth, IBMCloudFunctionsBackend
from wren_backend_openwhisk import OpenWhiskClient, action_name


def square(x):
    return x * x


def test_cli_build_deploy_then_map_100(tmp_path, monkeypatch, capsys, executor_config, action_runner, fresh_emulator, ids):
    runner, image = action_runner
    section = copy.deepcopy(executor_config)
    if runner.kind == "docker":
        image = f"wren-runtime-cf-cli-test:{uuid.uuid4().hex[:6]}"
        section["ibm_cf"].update(base_image="wren-test-base:bookworm", runtime_packages=["wren-storage-cos", "pytest"])
    section["ibm_cf"]["runtime"] = image
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(section))
    monkeypatch.setenv("WREN_CONFIG_FILE", str(path))
    if runner.kind == "docker":
        assert cli.main(["runtime", "build", image]) == 0
    assert cli.main(["runtime", "deploy", image, "--memory", "384", "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["action"] == action_name(image, 384) and info["namespace"] == ids["namespace_id"]
    assert (ids["namespace_id"], action_name(image, 384)) in fresh_emulator.actions
    with wren.function_executor(runtime_memory=384) as ex:
        assert ex.backend == "ibm_cf"
        assert ex.get_result(ex.map(square, range(100))) == [x * x for x in range(100)]
        summary = ex.job_summary()[0]
        assert summary["estimated_cost"] > 0  # price_per_gb_second is set
    assert cli.main(["runtime", "delete", image, "--memory", "384"]) == 0


def test_cloud_foundry_namespace_with_basic_key(executor_config, fresh_emulator, ids):
    cfg = copy.deepcopy(executor_config)
    cfg["ibm_cf"].update(namespace=ids["cf_namespace"], namespace_id=None, api_key=ids["cf_key"])
    with wren.function_executor(config=cfg) as ex:
        assert ex.get_result(ex.map(square, range(5))) == [0, 1, 4, 9, 16]
    assert any(ns == ids["cf_namespace"] for ns, _ in fresh_emulator.actions)


def test_remote_invoker_with_an_iam_namespace(executor_config, fresh_emulator):
    """The remote invoker inside the runtime exchanges the job's IBM Cloud API key for its own
    IAM token and starts the calls in the IAM namespace."""
    cfg = copy.deepcopy(executor_config)
    cfg["ibm_cf"].update(remote_invoker=True)
    with wren.function_executor(config=cfg) as ex:
        assert ex.get_result(ex.map(square, range(30))) == [x * x for x in range(30)]
        assert ex.compute.remote_started == 30
        assert ex.compute.activations <= 3
    assert fresh_emulator.counts["unauthorized"] == 0


def test_runtime_packages_bring_the_plugin_and_what_it_needs():
    """``wren runtime build`` installs wren-backend-ibmcf in runtimes (the remote invoker runs
    it) together with wren-backend-openwhisk, from the same place, not from the index."""
    from wren.runtimes.build import wheel_requirements

    args, names = wheel_requirements(["wren-backend-ibmcf"])
    assert names[:2] == ["wren-core", "wren-backend-ibmcf"] and "wren-backend-openwhisk" in names
    assert not any(a in ("wren-backend-openwhisk", "wren-backend-ibmcf") for a in args)  # paths or pinned


def test_bad_ibm_cloud_api_key_is_refused_clearly(executor_config, fresh_emulator):
    bad = "ibmcloud-" + uuid.uuid4().hex
    cfg = copy.deepcopy(executor_config)
    cfg["ibm_cf"]["api_key"] = bad
    t = time.monotonic()
    with wren.function_executor(config=cfg) as ex:
        with pytest.raises(InvocationError) as info:
            ex.get_result(ex.map(square, range(3)), timeout=60)
    msg = str(info.value)
    assert "IAM" in msg and "refused" in msg and "BXNIM0415E" in msg
    assert bad not in msg
    assert time.monotonic() - t < 20
    assert fresh_emulator.counts["accepted"] == 0


def test_config_needs_region_or_endpoint_and_a_namespace():
    from wren.config import parse_section
    from wren_backend_ibmcf import IBMCFConfig

    with pytest.raises(ConfigError, match="region"):
        parse_section(IBMCFConfig, "ibm_cf", {"api_key": "x"})
    with pytest.raises(ConfigError, match="namespace_id"):
        parse_section(IBMCFConfig, "ibm_cf", {"region": "us-south", "api_key": "secret-value"})
    cfg = parse_section(IBMCFConfig, "ibm_cf", {"region": "eu-de", "namespace_id": "abc", "api_key": "k"})
    assert cfg.api_host == "https://eu-de.functions.cloud.ibm.com"


def test_iam_token_renewed_before_expiry_and_shared_by_threads(iam, emulator, ids):
    iam.ttl = 4
    auth = IAMTokenAuth(ids["iam_api_key"], iam.url, refresh_margin=2)
    client = OpenWhiskClient(emulator.url, ids["namespace_id"], auth, extra_headers={"X-Namespace-Id": ids["namespace_id"]})
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        assert all(r == [] or isinstance(r, list) for r in pool.map(lambda _: client.list_actions(), range(40)))
    assert auth.exchanges == 1  # one exchange for 20 threads
    time.sleep(2.2)  # inside the refresh margin: the next request renews first
    client.list_actions()
    assert auth.exchanges == 2
    client.close()


def test_token_revoked_server_side_is_renewed_once(iam, emulator, ids):
    auth = IAMTokenAuth(ids["iam_api_key"], iam.url, refresh_margin=0)
    client = OpenWhiskClient(emulator.url, ids["namespace_id"], auth, extra_headers={"X-Namespace-Id": ids["namespace_id"]})
    client.list_actions()
    with iam.lock:
        iam.tokens.clear()  # every issued token is now unknown: the API answers 401
    client.list_actions()
    assert auth.exchanges == 2
    client.close()


def test_namespace_id_header_is_required_for_iam(iam, emulator, ids):
    from wren_backend_openwhisk import OpenWhiskAuthError

    client = OpenWhiskClient(emulator.url, ids["namespace_id"], IAMTokenAuth(ids["iam_api_key"], iam.url))
    with pytest.raises(OpenWhiskAuthError, match="403"):
        client.list_actions()
    client.close()


def test_backend_class_facts():
    assert IBMCloudFunctionsBackend.price_per_gb_second == 0.000017
    assert IBMCloudFunctionsBackend.name == "ibm_cf"
    assert wren.plugins.get_registry().get("compute", "ibm_cf").backend_class is IBMCloudFunctionsBackend


# -- IBM Cloud Functions' limits and addressing --------------------------------------------------

def test_iam_namespace_is_addressed_by_its_guid(executor_config, fresh_emulator, ids, iam):
    """IAM namespaces live under their GUID in the URL (with X-Namespace-Id); the display name
    there is refused."""
    from wren_backend_ibmcf import IBMCFConfig
    from wren.config import WrenConfig, parse_section

    cfg = parse_section(IBMCFConfig, "ibm_cf", executor_config["ibm_cf"])
    backend = IBMCloudFunctionsBackend(cfg, WrenConfig())
    assert backend.client.base.endswith(f"/api/v1/namespaces/{ids['namespace_id']}")
    backend.close()
    by_name = OpenWhiskClient(fresh_emulator.url, "wren-iam-ns", IAMTokenAuth(ids["iam_api_key"], iam.url),
                              extra_headers={"X-Namespace-Id": ids["namespace_id"]})
    from wren_backend_openwhisk import OpenWhiskAuthError

    with pytest.raises(OpenWhiskAuthError, match="403"):
        by_name.list_actions()
    by_name.close()


def test_ibm_limits_ten_minute_actions_2gb_and_5mb_payloads(executor_config, fresh_emulator, ids, iam):
    from wren.config import WrenConfig, parse_section
    from wren_backend_ibmcf import IBMCFConfig
    from wren_backend_openwhisk.client import OpenWhiskError

    section = {**executor_config["ibm_cf"]}
    del section["runtime_timeout"]
    cfg = parse_section(IBMCFConfig, "ibm_cf", section)
    assert (cfg.call_timeout, cfg.action_timeout, cfg.limit_memory, cfg.limit_payload) == \
        (570, 600, (128, 2048), 5 * 1024 * 1024)
    with pytest.raises(ConfigError, match="maximum of 600 s"):
        parse_section(IBMCFConfig, "ibm_cf", {**section, "runtime_timeout": 600})
    backend = IBMCloudFunctionsBackend(cfg, WrenConfig())
    name = backend.ensure_action(memory=2048)
    assert fresh_emulator.actions[(ids["namespace_id"], name)]["limits"] == \
        {"timeout": 600_000, "memory": 2048, "logs": 10, "concurrency": 1}
    client = backend.client
    with pytest.raises(OpenWhiskError, match="duration 630000 milliseconds exceeds allowed threshold of 600000"):
        client.put_action("too-long", "img:1", 256, 630)
    with pytest.raises(OpenWhiskError, match="memory size 4096 MB exceeds allowed threshold of 2048 MB"):
        client.put_action("too-big", "img:1", 4096, 60)
    client.put_action("payload", "img:1", 256, 60)
    assert client.invoke("payload", b'{"x":"' + b"y" * (2 * 1024 * 1024) + b'"}')  # 2 MB: over stock, under IBM
    with pytest.raises(OpenWhiskError, match=r"Request larger than allowed: \d+ > 5242880 bytes"):
        client.invoke("payload", b'{"x":"' + b"y" * (5 * 1024 * 1024) + b'"}')
    backend.close()


def test_ibm_per_minute_limit_is_survived(executor_config, fresh_emulator):
    """IBM's 5000 invocations per minute, on a scaled clock (windows of 0.2 s) with a small
    limit per window: every call of the map gets through."""
    cfg = copy.deepcopy(executor_config)
    with wren.function_executor(config=cfg) as ex:
        ex.get_result(ex.call_async(square, 1))
        fresh_emulator.reset_counts()
        fresh_emulator.minute_seconds = 0.2
        fresh_emulator.per_minute_limit = 8  # 40/s: under any rate wren posts at, so windows throttle
        assert ex.get_result(ex.map(square, range(200))) == [x * x for x in range(200)]
    assert fresh_emulator.counts["throttled_minute"] > 0 and max(fresh_emulator.window_accepts.values()) <= 8
