"""The openwhisk backend against the emulator: the runtime CLI end to end, throttling and 5xx
storms, credentials, the remote invoker, max_workers, partitioned data on the S3 server."""
from __future__ import annotations

import collections
import copy
import json
import time
import uuid

import pytest
import yaml

import wren
from wren import cli
from wren.errors import ConfigError, InvocationError
from wren.testing.funcs import count_words, merge_counts
from wren_backend_openwhisk import OpenWhiskClient, action_name
from wren_backend_openwhisk.client import BasicAuth

from forwardproxy import RecordingProxy


def square(x):
    return x * x


def nap(x):
    time.sleep(0.2)
    return x + 1


def span(_):
    start = time.time()
    time.sleep(0.3)
    return (start, time.time())


def _cfg(executor_config, **ow):
    cfg = copy.deepcopy(executor_config)
    cfg["openwhisk"].update(ow)
    return cfg


# -- the runtime commands, end to end --------------------------------------------------------

def test_cli_build_deploy_then_map_100(tmp_path, monkeypatch, capsys, executor_config, action_runner, fresh_emulator):
    runner, image = action_runner
    section = copy.deepcopy(executor_config)
    if runner.kind == "docker":
        # a runtime of its own, built from the local base image with the S3 storage plugin
        image = f"wren-runtime-cli-test:{uuid.uuid4().hex[:6]}"
        section["openwhisk"].update(base_image="wren-test-base:bookworm", runtime_packages=["wren-storage-cos", "pytest"])
    section["openwhisk"]["runtime"] = image
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(section))
    monkeypatch.setenv("WREN_CONFIG_FILE", str(path))

    if runner.kind == "docker":
        assert cli.main(["runtime", "build", image]) == 0
    assert cli.main(["runtime", "deploy", image, "--memory", "384", "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["action"] == action_name(image, 384) and info["python"] and info["wren"] == wren.__version__
    assert (("guest", action_name(image, 384))) in fresh_emulator.actions

    assert cli.main(["runtime", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"runtime": image, "memory": 384} in [{"runtime": r["runtime"], "memory": r["memory"]} for r in rows]

    with wren.function_executor(runtime_memory=384) as ex:
        assert ex.backend == "openwhisk"
        assert ex.get_result(ex.map(square, range(100))) == [x * x for x in range(100)]
    assert fresh_emulator.counts["accepted"] >= 100

    assert cli.main(["runtime", "delete", image, "--memory", "384"]) == 0
    assert ("guest", action_name(image, 384)) not in fresh_emulator.actions


def test_action_deployed_once_on_first_use(executor_config, fresh_emulator):
    cfg = _cfg(executor_config, runtime_memory=320)
    fresh_emulator.actions.pop(("guest", action_name(cfg["openwhisk"]["runtime"], 320)), None)
    with wren.function_executor(config=cfg) as ex:
        futures = [ex.call_async(square, i) for i in range(10)]  # ten jobs racing to deploy
        assert ex.get_result(futures) == [i * i for i in range(10)]
    assert ("guest", action_name(cfg["openwhisk"]["runtime"], 320)) in fresh_emulator.actions


def test_runtime_metadata_read_once_then_found_in_storage(executor_config, fresh_emulator, tmp_path, monkeypatch):
    """The first client asks the deployed action for its metadata and caches it locally and in
    storage; a second machine (fresh home, same storage) does not ask the action again; a
    redeployed action is asked again."""
    cfg = _cfg(executor_config, runtime_memory=288)
    fresh_emulator.actions.pop(("guest", action_name(cfg["openwhisk"]["runtime"], 288)), None)
    for machine in ("first", "second"):
        monkeypatch.setenv("HOME", str(tmp_path / machine))
        fresh_emulator.reset_counts()
        with wren.function_executor(config=cfg) as ex:
            meta = ex.compute.runtime_metadata()
            assert ex.get_result(ex.call_async(square, 3)) == 9
        assert meta["wren"] == wren.__version__
        assert fresh_emulator.counts["blocking"] == (1 if machine == "first" else 0), machine
        assert list((tmp_path / machine / ".wren" / "runtimes").glob("openwhisk-*288MB.json"))
    monkeypatch.setenv("HOME", str(tmp_path / "third"))
    fresh_emulator.reset_counts()
    with wren.function_executor(config=cfg) as ex:
        ex.compute.deploy_runtime(cfg["openwhisk"]["runtime"], 288)  # a new revision of the action
    assert fresh_emulator.counts["blocking"] == 1


# -- throttling and server errors ------------------------------------------------------------

def test_429_storm_completes(executor_config, fresh_emulator):
    fresh_emulator.concurrency_limit = 4
    cfg = _cfg(executor_config)
    cfg["wren"]["max_workers"] = 40
    t = time.monotonic()
    with wren.function_executor(config=cfg) as ex:
        assert ex.get_result(ex.map(nap, range(40))) == list(range(1, 41))
    assert fresh_emulator.counts["throttled"] > 10, fresh_emulator.counts
    assert time.monotonic() - t < 90


def test_5xx_storm_completes(executor_config, fresh_emulator):
    with wren.function_executor(config=executor_config) as ex:
        ex.get_result(ex.call_async(square, 2))  # action deployed, metadata known
        fresh_emulator.fail_next(30, 503)
        fresh_emulator.fail_next(10, 502)
        t = time.monotonic()
        assert ex.get_result(ex.map(square, range(30))) == [x * x for x in range(30)]
        assert time.monotonic() - t < 60
    assert fresh_emulator.counts["injected_failures"] == 40


def test_persistent_5xx_fails_calls_with_a_clear_error(executor_config, fresh_emulator):
    cfg = _cfg(executor_config, retries=3)
    with wren.function_executor(config=cfg) as ex:
        ex.get_result(ex.call_async(square, 2))
        fresh_emulator.fail_next(10_000, 500)
        t = time.monotonic()
        fs = ex.map(square, range(5))
        with pytest.raises(InvocationError, match="HTTP 500 3 time"):
            ex.get_result(fs, timeout=60)
        assert time.monotonic() - t < 30
        fresh_emulator._fail.clear()


def test_persistent_throttling_fails_after_throttle_timeout(executor_config, fresh_emulator):
    cfg = _cfg(executor_config, throttle_timeout=1.0)
    with wren.function_executor(config=cfg) as ex:
        ex.get_result(ex.call_async(square, 2))
        fresh_emulator.concurrency_limit = 0
        t = time.monotonic()
        with pytest.raises(InvocationError, match="429"):
            ex.get_result(ex.call_async(square, 3), timeout=60)
        assert time.monotonic() - t < 20


# -- credentials -----------------------------------------------------------------------------

def test_bad_api_key_is_refused_clearly_without_the_key(executor_config, fresh_emulator):
    bad = f"{uuid.uuid4()}:{uuid.uuid4().hex}"
    cfg = _cfg(executor_config, api_key=bad)
    t = time.monotonic()
    with wren.function_executor(config=cfg) as ex:
        with pytest.raises(InvocationError) as info:
            ex.get_result(ex.map(square, range(3)), timeout=60)
    msg = str(info.value)
    assert "refused" in msg and "401" in msg and "api_key" in msg
    assert bad not in msg and bad.split(":")[1] not in msg
    assert time.monotonic() - t < 20
    assert fresh_emulator.counts["accepted"] == 0


def test_malformed_api_key_is_a_config_error_without_the_key(executor_config):
    cfg = _cfg(executor_config, api_key="no-colon-secret-value")
    with pytest.raises(ConfigError) as info:
        wren.function_executor(config=cfg)
    assert "no-colon-secret-value" not in str(info.value)


def test_client_namespaces_and_actions(emulator, ow_section):
    from conftest import API_KEY

    client = OpenWhiskClient(emulator.url, "_", BasicAuth(API_KEY), insecure=True)
    assert client.list_namespaces() == ["guest"]
    assert client.session.verify is False
    client.put_action("unit-test-action", "some/image:1", 128, 10)
    assert client.get_action("unit-test-action")["limits"]["memory"] == 128
    assert "unit-test-action" in [a["name"] for a in client.list_actions()]
    assert client.delete_action("unit-test-action") and client.get_action("unit-test-action") is None
    assert "Authorization" not in repr(client.session.headers)
    client.close()


def test_client_honours_the_proxy_environment(emulator, monkeypatch):
    """HTTP(S)_PROXY / NO_PROXY are read once when the client is made (not on every request),
    and invocations (sent on the fast path) go through the proxy like every other request."""
    from conftest import API_KEY

    proxy = RecordingProxy()
    try:
        for var in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        client = OpenWhiskClient(emulator.url, "guest", BasicAuth(API_KEY))
        monkeypatch.delenv("HTTP_PROXY")
        monkeypatch.delenv("http_proxy")  # read at construction: later changes do not matter
        client.put_action("proxy-test-action", "some/image:1", 128, 10)
        assert client.invoke("proxy-test-action", b'{"x":1}')
        client.delete_action("proxy-test-action")
        client.close()
        methods = [m for m, url in proxy.seen if url.startswith(emulator.url + "/api/v1/namespaces/guest/actions/")]
        assert methods == ["PUT", "POST", "DELETE"], proxy.seen

        proxy.seen.clear()
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        bypass = OpenWhiskClient(emulator.url, "guest", BasicAuth(API_KEY))
        assert bypass.list_namespaces() == ["guest"]
        bypass.close()
        assert proxy.seen == []
    finally:
        proxy.close()


# -- how calls are sent ----------------------------------------------------------------------

def test_remote_invoker_starts_the_calls_from_inside_the_platform(executor_config, fresh_emulator):
    """With remote_invoker, the client sends one activation per batch; the runtime's entry
    point (a real container) builds the backend from the job's config and starts the calls."""
    cfg = _cfg(executor_config, remote_invoker=True, remote_invoker_calls=25)
    with wren.function_executor(config=cfg) as ex:
        ex.compute.runtime_metadata()  # deployment and metadata before counting
        fresh_emulator.reset_counts()
        assert ex.get_result(ex.map(square, range(60))) == [x * x for x in range(60)]
        # the remote invokers' answers are polled (non-blocking invocations): the last ones may
        # come after the results
        deadline = time.monotonic() + 15
        while ex.compute.remote_started < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
        sent, started = ex.compute.activations, ex.compute.remote_started
    assert started == 60
    # 25 calls per activation at most; the first 50 (max_workers) go at once, in 2 activations,
    # and the last 10 as running calls end, each freed slot at worst in an activation of its own
    # (a slow machine frees them one by one): 2 + 10
    assert 3 <= sent <= 12, sent
    counts = fresh_emulator.counts
    assert counts["accepted"] == 60 + sent, counts  # the calls, plus the remote invokers
    assert counts["blocking"] == 0, counts  # remote invokers are started non-blocking, then polled


def test_remote_invoker_falls_back_when_the_runtime_cannot_invoke(ow_section, caplog):
    """A runtime that cannot build the backend answers so, before starting anything; the client
    warns once, with the fix, and invokes the calls itself (nothing is lost or run twice)."""
    from conftest import API_KEY
    from emulator import NoopRunner, OpenWhiskEmulator
    from wren.config import WrenConfig, parse_section
    from wren.worker.__main__ import handle_payload
    from wren_backend_openwhisk import OpenWhiskBackend, OpenWhiskConfig

    class RuntimeWithoutThePlugin(NoopRunner):
        """Answers remote-invoker payloads with the real entry point, asked for a backend this
        interpreter does not have (as a runtime built without the plugin would)."""

        def run(self, params, meta, timeout):
            if "remote_invoker" in params:
                spec = {**params["remote_invoker"], "backend": "openwhisk-not-installed"}
                self.answers.append(handle_payload({**params, "remote_invoker": spec}))
                return True, self.answers[-1]
            return super().run(params, meta, timeout)

    runner = RuntimeWithoutThePlugin()
    runner.answers = []
    with OpenWhiskEmulator({API_KEY: "guest"}, runner=runner) as emu:
        cfg = parse_section(OpenWhiskConfig, "openwhisk", {**ow_section, "endpoint": emu.url, "remote_invoker": True})
        backend = OpenWhiskBackend(cfg, WrenConfig())
        job = {"job_key": "x-0/M000", "timeout": 10, "runtime_memory": None, "config": {}}
        failed = []

        class Channel:
            def failed(self, *a):
                failed.append(a)

        with caplog.at_level("WARNING", logger="wren.openwhisk"):
            for n in range(2):
                calls = [{"call_id": f"{n}{i:04d}", "data": b"x", "data_range": None, "obj": None} for i in range(20)]
                backend.invoke(job, calls, Channel())
        deadline = time.monotonic() + 10
        while sum(runner.calls_per_activation) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        backend.close()
    assert not failed
    [answer] = runner.answers  # asked once; the second batch went straight to direct invocation
    assert answer["remote_invoker"]["started"] == 0
    assert "openwhisk-not-installed" in answer["remote_invoker"]["error"]
    assert runner.calls_per_activation == [1] * 40
    warnings = [r.getMessage() for r in caplog.records if "remote_invoker" in r.getMessage()]
    assert len(warnings) == 1 and "wren runtime build" in warnings[0] and "wren-backend-openwhisk" in warnings[0]


def test_remote_invoker_answers_before_its_deadline_when_throttled(ow_section):
    """Inside the platform, the fan-out retries 429s only until shortly before the activation's
    deadline (OpenWhisk's ``deadline`` in /run), then answers with the calls it could not start."""
    from conftest import API_KEY, NAMESPACE
    from emulator import NoopRunner, OpenWhiskEmulator
    from wren.worker import protocol
    from wren.worker.__main__ import handle_payload
    from wren_backend_openwhisk.backend import FAN_OUT_MARGIN

    with OpenWhiskEmulator({API_KEY: NAMESPACE}, runner=NoopRunner(), concurrency_limit=0) as emu:
        section = {**ow_section, "endpoint": emu.url}
        OpenWhiskClient(emu.url, NAMESPACE, BasicAuth(API_KEY)).put_action("a-256MB", "img", 256, 60)
        job = {"job_key": "d-0/M000", "timeout": 10, "runtime_memory": None, "config": {"openwhisk": section}}
        calls = [{"call_id": f"{i:05d}", "data": b"x", "data_range": None, "obj": None} for i in range(5)]
        payload = protocol.encode({"job": job, "calls": calls,
                                   "remote_invoker": {"backend": "openwhisk", "action": "a-256MB"}})
        t0 = time.monotonic()
        answer = handle_payload(payload, deadline=time.time() + FAN_OUT_MARGIN + 1.5)
        took = time.monotonic() - t0
        throttled = emu.counts["throttled"]
    info = answer["remote_invoker"]
    assert info["error"] is None and info["started"] == 0
    assert sorted(f["call_id"] for f in info["failed"]) == [c["call_id"] for c in calls]
    assert all("429" in f["error"] for f in info["failed"]), info["failed"][0]
    assert throttled >= 5 and took < 30, took  # gave up at the deadline, not after throttle_timeout (300 s)


def test_max_workers_caps_calls_in_flight(executor_config):
    cfg = copy.deepcopy(executor_config)
    cfg["wren"]["max_workers"] = 3
    with wren.function_executor(config=cfg) as ex:
        intervals = sorted(ex.get_result(ex.map(span, range(9))))
    for start, _ in intervals:
        assert sum(1 for s, e in intervals if s <= start < e) <= 3, intervals


# -- data partitioning on the S3 server ------------------------------------------------------

TEXT = "the quick brown fox\njumps over the lazy dog\n" * 3000


def test_partitioned_word_count_on_cos(executor_config, cos_section):
    prefix = f"ow-texts-{uuid.uuid4().hex[:6]}/"
    with wren.function_executor(config=executor_config) as ex:
        for name in ("a.txt", "b.txt"):
            ex.storage_backend.put_object(cos_section["storage_bucket"], prefix + name, TEXT.encode())
        fut = ex.map_reduce(count_words, f"cos://{cos_section['storage_bucket']}/{prefix}", merge_counts, chunk_size=16 * 1024,
                            include_modules=["test_backend"], reducer_wait_local=True)
        total = ex.get_result(fut)
        assert total == merge_counts([collections.Counter(TEXT.split())] * 2)
        assert len([f for f in ex.futures if f.kind != "async"]) > 4  # partitioned into chunks
