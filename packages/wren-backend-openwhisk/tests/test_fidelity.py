"""The platform's real limits on each profile (stock, standalone; IBM Cloud Functions in
wren-backend-ibmcf's tests), and the client kept within them: action timeouts, memory, payloads,
invocations per minute, no duplicate remote-invoker starts, activation records, the action
container's /init and /run bodies and environment, memory limits (OOM) on the Docker engine."""
from __future__ import annotations

import copy
import time

import pytest

import wren
from wren.config import WrenConfig, parse_section
from wren.errors import ConfigError, InvalidInputError, InvocationError, WorkerDiedError
from wren_backend_openwhisk import OpenWhiskBackend, OpenWhiskClient, OpenWhiskConfig
from wren_backend_openwhisk.client import BasicAuth, OpenWhiskError


def square(x):
    return x * x


def hog(mb):
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)


KEY = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"


class Channel:
    def __init__(self):
        self.failures = []

    def failed(self, key, call_id, error):
        self.failures.append((call_id, error))

    def deliver(self, status):
        pass

    def running(self, *a):
        pass


def _emulator(profile, runner=None, **kw):
    from emulator import NoopRunner, OpenWhiskEmulator

    return OpenWhiskEmulator({KEY: "guest"}, runner=runner or NoopRunner(), profile=profile, **kw)


def _backend(emu, **section):
    cfg = parse_section(OpenWhiskConfig, "openwhisk", {"endpoint": emu.url, "namespace": "guest", "api_key": KEY,
                                                      "runtime": "some/runtime:1", "backoff_base": 0.01,
                                                      "backoff_max": 0.2, **section})
    return OpenWhiskBackend(cfg, WrenConfig())


def _calls(n, data=b"x"):
    return [{"call_id": f"{i:05d}", "data": data, "data_range": None, "obj": None} for i in range(n)]


# -- action limits ---------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["stock", "standalone"])
def test_the_old_default_action_timeout_is_refused_and_wren_fits_the_limit(profile):
    """630,000 ms (wren's former default) is over OpenWhisk's 300,000 ms: the controller answers
    400 with its own message; wren's default now deploys 300,000 ms (270 s calls + 30 s)."""
    with _emulator(profile) as emu:
        client = OpenWhiskClient(emu.url, "guest", BasicAuth(KEY))
        with pytest.raises(OpenWhiskError) as info:
            client.put_action("too-long", "img:1", 256, 630)
        assert info.value.status == 400
        assert "duration 630000 milliseconds exceeds allowed threshold of 300000 milliseconds" in str(info.value)
        with pytest.raises(OpenWhiskError, match="memory size 1024 MB exceeds allowed threshold of 512 MB"):
            client.put_action("too-big", "img:1", 1024, 60)
        with pytest.raises(OpenWhiskError, match="concurrency 4 exceeds allowed threshold of 1"):
            client.put_action("too-wide", "img:1", 256, 60, concurrency=4)
        client.close()

        backend = _backend(emu)
        name = backend.ensure_action()
        assert emu.actions[("guest", name)]["limits"]["timeout"] == 300_000
        assert backend.config.call_timeout == 270
        assert emu.counts["refused_put"] == 3  # only the raw client's
        backend.close()


def test_config_refuses_what_the_platform_would_refuse_naming_the_limit():
    base = {"endpoint": "http://127.0.0.1:9", "api_key": KEY}
    with pytest.raises(ConfigError, match=r"runtime_timeout is 600 s.*maximum of 300 s.*at most 270"):
        parse_section(OpenWhiskConfig, "openwhisk", {**base, "runtime_timeout": 600})
    with pytest.raises(ConfigError, match=r"runtime_memory: 1024 MB .*128 to 512 MB"):
        parse_section(OpenWhiskConfig, "openwhisk", {**base, "runtime_memory": 1024})
    with pytest.raises(ConfigError, match="action_concurrency 8 is over the platform's maximum of 1"):
        parse_section(OpenWhiskConfig, "openwhisk", {**base, "action_concurrency": 8})
    # a deployment with raised limits says so
    cfg = parse_section(OpenWhiskConfig, "openwhisk", {**base, "runtime_timeout": 600, "max_action_timeout": 900,
                                                       "runtime_memory": 1024, "max_action_memory": 2048})
    assert cfg.action_timeout == 630 and cfg.limit_memory == (128, 2048)


def test_memory_out_of_range_is_refused_before_deploying(executor_config, fresh_emulator):
    with wren.function_executor(config=executor_config) as ex:
        ex.compute.runtime_metadata()
        fresh_emulator.reset_counts()
        fs = ex.map(square, range(3), runtime_memory=1024)
        with pytest.raises(InvalidInputError, match=r"runtime_memory=1024.*128 to 512 MB"):
            ex.get_result(fs, timeout=60)
    assert fresh_emulator.counts["refused_put"] == 0 and fresh_emulator.counts["invocations"] == 0
    assert not [a for (_, a) in fresh_emulator.actions if a.endswith("_1024MB")]


def test_a_job_timeout_that_cannot_fit_is_refused_and_the_default_is_lowered(executor_config, fresh_emulator):
    with wren.function_executor(config=executor_config) as ex:
        ex.compute.runtime_metadata()
        fresh_emulator.reset_counts()
        fs = ex.map(square, range(3), timeout=400)
        with pytest.raises(InvalidInputError, match=r"timeout 400 s cannot fit.*longest call is 120 s"):
            ex.get_result(fs, timeout=60)
    assert fresh_emulator.counts["invocations"] == 0  # nothing sent

    cfg = copy.deepcopy(executor_config)
    del cfg["wren"]["runtime_timeout"], cfg["openwhisk"]["runtime_timeout"]  # wren's default 600 s, never chosen
    with wren.function_executor(config=cfg) as ex:
        assert ex.get_result(ex.map(square, range(3))) == [0, 1, 4]
        assert ex.compute.check_job({"job_key": "k", "timeout": 600.0})["timeout"] == 270.0


# -- payloads ----------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["stock", "standalone"])
def test_payload_over_the_limit_is_a_413_and_the_remote_invoker_stays_under_it(profile):
    from emulator import NoopRunner

    class Answering(NoopRunner):
        def run(self, params, meta, timeout):
            if "remote_invoker" in params:
                self.calls_per_activation.append(len(params["calls"]))
                return True, {"remote_invoker": {"started": len(params["calls"]), "failed": [], "error": None}}
            return super().run(params, meta, timeout)

    runner = Answering()
    with _emulator(profile, runner, minute_seconds=0.05) as emu:
        client = OpenWhiskClient(emu.url, "guest", BasicAuth(KEY))
        client.put_action("a", "img:1", 256, 60)
        with pytest.raises(OpenWhiskError) as info:
            client.invoke("a", b'{"x":"' + b"y" * (1024 * 1024) + b'"}')
        assert info.value.status == 413 and "Request larger than allowed: 1048584 > 1048576 bytes." in str(info.value)
        client.close()

        backend = _backend(emu, remote_invoker=True, throttle_timeout=30)
        job = {"job_key": "p-0/M000", "timeout": 10, "runtime_memory": None, "config": {}}
        channel = Channel()
        backend.invoke(job, _calls(1000, b"z" * 2000), channel)  # about 2.7 MB of calls
        backend.close()
    assert not channel.failures and emu.counts["too_large"] == 1  # the raw client's only
    assert sum(runner.calls_per_activation) == 1000 and len(runner.calls_per_activation) >= 3


# -- invocations per minute ----------------------------------------------------------------------

def test_a_1000_call_map_at_60_per_minute_completes_with_every_result(executor_config, fresh_emulator):
    """The stock limit of 60 invocations per minute, on a scaled clock (windows of 0.25 s: the
    limit per window is the real one, the window is 240 times shorter). Every call gets through
    in later windows; none is lost."""
    cfg = copy.deepcopy(executor_config)
    cfg["wren"]["max_workers"] = 100
    with wren.function_executor(config=cfg) as ex:
        ex.get_result(ex.call_async(square, 1))
        fresh_emulator.reset_counts()
        fresh_emulator.minute_seconds = 0.25
        fresh_emulator.per_minute_limit = 60
        assert ex.get_result(ex.map(square, range(1000))) == [x * x for x in range(1000)]
    counts = fresh_emulator.counts
    assert counts["accepted"] == 1000 and counts["throttled_minute"] > 0, counts
    assert max(fresh_emulator.window_accepts.values()) <= 60


@pytest.mark.parametrize("profile", ["stock", "standalone"])
def test_every_call_gets_through_the_per_minute_limit_of_each_profile(profile):
    """60 invocations per minute on both (windows of 0.1 s here), refused attempts counted: 300
    calls posted by the client all get accepted, in order of windows, none dropped."""
    with _emulator(profile, minute_seconds=0.1) as emu:
        backend = _backend(emu, throttle_timeout=60)
        channel = Channel()
        backend.invoke({"job_key": "m-0/M000", "timeout": 10, "runtime_memory": None, "config": {}}, _calls(300),
                       channel)
        deadline = time.monotonic() + 60
        while emu.counts["accepted"] < 300 and not channel.failures and time.monotonic() < deadline:
            time.sleep(0.05)
        backend.close()
    assert not channel.failures and emu.counts["accepted"] == 300 == backend.activations
    assert emu.counts["throttled_minute"] > 0 and max(emu.window_accepts.values()) <= 60


def test_per_minute_throttling_fails_clearly_at_the_deadline_never_silently(executor_config, fresh_emulator):
    cfg = copy.deepcopy(executor_config)
    cfg["openwhisk"]["throttle_timeout"] = 0.5
    with wren.function_executor(config=cfg) as ex:
        ex.get_result(ex.call_async(square, 1))
        fresh_emulator.reset_counts()
        fresh_emulator.minute_seconds = 30.0
        fresh_emulator.per_minute_limit = 20
        fs = ex.map(square, range(100))
        done, not_done = ex.wait(fs, throw_except=False, timeout=60)
    assert not not_done  # every call ended: a result or an error, none lost
    ok = [f for f in fs if not f.error]
    failed = [f for f in fs if f.error]
    # windows are wall-clock aligned, as the controller's: the test may straddle two of them
    assert len(ok) == fresh_emulator.counts["accepted"] and max(fresh_emulator.window_accepts.values()) <= 20
    assert len(ok) + len(failed) == 100 and len(failed) >= 60
    assert all(f.result() == i * i for i, f in enumerate(fs) if not f.error)
    with pytest.raises(InvocationError, match=r"Too many requests in the last minute \(count: \d+, allowed: 20\)"):
        failed[0].result()
    with pytest.raises(InvocationError, match="throttle_timeout"):
        failed[-1].result()


# -- the remote invoker is started once ----------------------------------------------------------

def test_a_slow_remote_invoker_batch_is_started_once():
    """Its answer takes longer than the client's request timeout: a blocking POST would have been
    sent again (a second start of the whole batch); a non-blocking one is answered at once."""
    from emulator import NoopRunner

    class Slow(NoopRunner):
        def run(self, params, meta, timeout):
            if "remote_invoker" in params:
                time.sleep(2.5)
                return True, {"remote_invoker": {"started": len(params["calls"]), "failed": [], "error": None}}
            return super().run(params, meta, timeout)

    with _emulator("stock", Slow()) as emu:
        emu.log_params = True
        backend = _backend(emu, remote_invoker=True, request_timeout=1.0)
        backend.ensure_action()
        channel = Channel()
        backend.invoke({"job_key": "s-0/M000", "timeout": 10, "runtime_memory": None, "config": {}}, _calls(10),
                       channel)
        starts = [p for p in emu.params_log if "remote_invoker" in p]
        assert backend.remote_started == 10
        backend.close()
    assert len(starts) == 1 and not channel.failures


# -- activation records, errors, what the action container gets -----------------------------------

def test_activation_records_and_the_500_502_answers():
    from emulator import NoopRunner

    class Broken(NoopRunner):
        def start_action(self, action, env):
            if "broken" in action["exec"]["image"]:
                raise OSError("no space left on device")
            return super().start_action(action, env)

        def run(self, params, meta, timeout):
            if params.get("fail"):
                return False, {"error": "the action said no"}
            return super().run(params, meta, timeout)

    runner = Broken()
    with _emulator("stock", runner) as emu:
        client = OpenWhiskClient(emu.url, "guest", BasicAuth(KEY))
        client.put_action("ok", "img:1", 256, 60, annotations={"wren_runtime": "img:1"})
        client.put_action("broken", "broken:1", 256, 60)
        aid = client.invoke("ok", b'{"a":1}')
        deadline = time.monotonic() + 10
        while (record := client.get_activation(aid)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        for field in ("namespace", "name", "version", "publish", "subject", "activationId", "start", "response", "logs"):
            assert field in record, field  # the swagger's required fields (validated too)
        assert record["response"]["statusCode"] == 0 and record["response"]["status"] == "success"
        with pytest.raises(OpenWhiskError, match="whisk internal error|Failed to provision") as info:
            client.invoke_blocking("broken", {"a": 1}, wait=10)
        assert info.value.status == 500
        with pytest.raises(OpenWhiskError, match="the action said no") as info:
            client.invoke_blocking("ok", {"fail": True}, wait=10)
        assert info.value.status == 502

        # what the invoker sends the action container (ContainerProxy.scala)
        run, init = runner.last_run, runner.last_init
        assert set(run) == {"value", "namespace", "action_name", "action_version", "activation_id", "transaction_id",
                            "deadline", "api_key"}
        assert run["action_name"] == "/guest/ok" and run["api_key"] == KEY and int(run["deadline"]) > time.time() * 1000
        env = init["value"]["env"]
        assert {"__OW_NAMESPACE", "__OW_ACTION_NAME", "__OW_ACTION_VERSION", "__OW_ACTIVATION_ID",
                "__OW_TRANSACTION_ID", "__OW_DEADLINE", "__OW_API_KEY"} <= set(env)
        client.close()


def test_action_containers_get_the_actions_memory_as_their_limit(executor_config, action_runner, fresh_emulator):
    """On the Docker engine: ``--memory`` = ``--memory-swap`` = the action's memory, and
    ``__OW_API_HOST``; a call that goes over it is killed, and reported, while others complete."""
    runner, _ = action_runner
    if runner.kind != "docker":
        pytest.skip(f"actions run as {runner.kind}, not containers: no memory limit to enforce")
    cfg = copy.deepcopy(executor_config)
    cfg["openwhisk"]["runtime_memory"] = 192
    with wren.function_executor(config=cfg) as ex:
        assert ex.get_result(ex.map(square, range(4))) == [0, 1, 4, 9]
        assert runner.last_settings["mem_limit"] == "192m" == runner.last_settings["memswap_limit"]
        assert runner.last_settings["environment"]["__OW_API_HOST"] == fresh_emulator.url
        big = ex.call_async(hog, 400)
        with pytest.raises((WorkerDiedError, InvocationError)):
            ex.get_result(big, timeout=90)
        assert ex.get_result(ex.call_async(hog, 16)) == 16 * 1024 * 1024
