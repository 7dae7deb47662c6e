"""Plugin discovery and configuration."""
import textwrap
import warnings

import pytest

import wren
from wren import plugins
from wren.config import WrenConfig, load_config, parse_section
from wren.errors import BackendNotInstalledError, ConfigError, PluginError
from wren.localconfig import LocalhostConfig
from wren.storage.local import LocalStorage


@pytest.fixture
def fresh_pm():
    pm = plugins.create_plugin_manager(load_entry_points=False)
    with plugins.use_plugin_manager(pm):
        yield pm


class _Plugin:
    def __init__(self, name, cls=LocalStorage):
        self.name, self.cls = name, cls

    @wren.hookimpl
    def wren_storage_backends(self):
        return [wren.StorageBackendSpec(self.name, self.cls, LocalhostConfig)]


def test_builtins_come_through_the_hooks(fresh_pm):
    reg = plugins.get_registry()
    assert reg.names("compute") == ["localhost"]
    assert reg.names("storage") == ["localhost"]
    assert reg.names("monitor") == ["rabbitmq", "storage"]
    assert reg.describe()[0]["distribution"] == "wren-core"


def test_unknown_backend_lists_the_choices(fresh_pm):
    with pytest.raises(PluginError, match="unknown compute backend 'lokalhost'.*choose one of: localhost.*Did you mean 'localhost'"):
        wren.function_executor(backend="lokalhost")


@pytest.mark.parametrize("name, dist", [("ibm_cf", "wren-backend-ibmcf"), ("knative", "wren-backend-knative"),
                                        ("openwhisk", "wren-backend-openwhisk"), ("docker", "wren-backend-docker")])
def test_known_missing_backend_names_the_distribution(fresh_pm, name, dist):
    shortcut = getattr(wren, f"{name}_executor")
    with pytest.raises(BackendNotInstalledError, match=f"pip install {dist}"):
        shortcut()


def test_two_plugins_claiming_one_name(fresh_pm):
    fresh_pm.register(_Plugin("dup"), name="first-plugin")
    fresh_pm.register(_Plugin("dup"), name="second-plugin")
    with pytest.raises(PluginError, match="claimed by .*first-plugin.* and .*second-plugin"):
        plugins.get_registry().get("storage", "dup")


def test_a_throwaway_plugin_is_usable(fresh_pm, tmp_path):
    class MyStorage(LocalStorage):
        name = "mine"

    fresh_pm.register(_Plugin("mine", MyStorage), name="mine-plugin")
    cfg = {"mine": {"storage_root": str(tmp_path)}}
    with wren.function_executor(storage="mine", config=cfg) as ex:
        assert ex.storage_backend.name == "mine"
    st = wren.Storage(config=cfg, backend="mine")
    st.put_object(st.bucket, "k", b"v")
    assert (tmp_path / st.bucket / "k").read_bytes() == b"v"  # the data went through the plugin


def test_broken_entry_point_warns_and_the_rest_load(tmp_path, monkeypatch):
    dist = tmp_path / "wren_broken-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: wren-broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[wren]\nbroken = wren_broken_plugin_mod\n")
    (tmp_path / "wren_broken_plugin_mod.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = plugins.create_plugin_manager(load_entry_points=True)
        with plugins.use_plugin_manager(pm):
            plugins.get_registry().names("compute")  # entry points load on first need
    msgs = [str(w.message) for w in caught]
    assert any("wren-broken 1.0" in m and "boom at import" in m for m in msgs), msgs
    with plugins.use_plugin_manager(pm):
        assert "localhost" in plugins.get_registry().names("compute")


def test_disable_plugins_switch(monkeypatch):
    monkeypatch.setenv("WREN_DISABLE_PLUGINS", "1")
    pm = plugins.create_plugin_manager()
    assert [n for n in (pm.get_name(p) for p in pm.get_plugins())] == ["wren.builtins"]


def test_config_precedence(tmp_path, monkeypatch):
    f = tmp_path / "config.yaml"
    f.write_text("wren:\n  max_workers: 3\n  runtime_timeout: 10\n  monitor_interval: 5\n")
    monkeypatch.setenv("WREN_CONFIG_FILE", str(f))
    monkeypatch.setenv("WREN_RUNTIME_TIMEOUT", "20")
    cfg = load_config()
    assert (cfg.wren.max_workers, cfg.wren.runtime_timeout, cfg.wren.monitor_interval) == (3, 20.0, 5.0)
    cfg = load_config({"wren": {"runtime_timeout": 30, "max_workers": 4}}, {"max_workers": 5})
    assert (cfg.wren.max_workers, cfg.wren.runtime_timeout) == (5, 30.0)
    assert cfg.source_file == str(f)


def test_no_config_means_localhost():
    cfg = load_config()
    assert (cfg.wren.backend, cfg.wren.storage) == ("localhost", "localhost")


def test_env_sets_plugin_sections(monkeypatch, tmp_path):
    monkeypatch.setenv("WREN_LOCALHOST__WORKER_PROCESSES", "3")
    cfg = load_config()
    assert parse_section(LocalhostConfig, "localhost", cfg.section("localhost")).worker_processes == 3


@pytest.mark.parametrize(
    "config, match",
    [
        ({"wren": {"max_wrokers": 2}}, "unknown key 'max_wrokers'.*did you mean 'max_workers'"),
        ({"wren": {"max_workers": "many"}}, "wren.max_workers must be a whole number"),
        ({"wren": {"max_workers": 0}}, "at least 1"),
        ({"wren": {"runtime_timeout": -1}}, "runtime_timeout must be > 0"),
        ({"wren": {"log_level": "LOUD"}}, "not a logging level"),
        ({"localhost": {"worker_procesess": 2}}, "did you mean 'worker_processes'"),
        ({"ibmcf": {"api_key": "x"}}, "unknown config section 'ibmcf'.*did you mean 'ibm_cf'"),
        ({"wren": "localhost"}, "must be a mapping"),
        (["wren"], "config must be a dict"),
    ],
)
def test_bad_config(config, match):
    with pytest.raises(ConfigError, match=match):
        wren.function_executor(config=config)


def test_bad_yaml_file(tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("wren: [unclosed\n")
    monkeypatch.setenv("WREN_CONFIG_FILE", str(f))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config()
    monkeypatch.setenv("WREN_CONFIG_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config()


def test_unknown_kwarg_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown key 'max_worker'"):
        wren.function_executor(max_worker=3)


def test_required_key_names_env_var():
    import dataclasses

    @dataclasses.dataclass
    class Needs:
        endpoint: str

    with pytest.raises(ConfigError, match="WREN_ACME__ENDPOINT"):
        parse_section(Needs, "acme", {})


def test_wren_config_defaults_documented():
    assert WrenConfig().backend == "localhost"
    assert textwrap.dedent(WrenConfig.__doc__ or "")


class _PlatformBackend(wren.ComputeBackend):
    """Starts calls "from inside the platform" by failing every other one, as a platform that
    keeps refusing some invocations would."""

    name = "fan-out-test"
    started: list = []

    def invoke(self, job, calls, channel):
        raise AssertionError("a remote invoker must not invoke through another remote invoker")

    def invoke_from_platform(self, job, calls, channel, spec):
        from wren.errors import InvocationError

        assert spec["backend"] == self.name and self.config.endpoint == "http://127.0.0.1:9"
        for i, call in enumerate(calls):
            if i % 2:
                channel.failed(job["job_key"], call["call_id"], InvocationError("throttled for too long"))
            else:
                self.started.append(call["call_id"])


def test_remote_invoker_fan_out_builds_the_backend_from_the_jobs_config(fresh_pm):
    import dataclasses

    from wren.worker.__main__ import handle_payload
    from wren.worker.protocol import encode

    @dataclasses.dataclass
    class Section:
        endpoint: str = ""

    class Plugin:
        @wren.hookimpl
        def wren_compute_backends(self):
            return [wren.ComputeBackendSpec("fan-out-test", _PlatformBackend, Section)]

    fresh_pm.register(Plugin())
    from wren.records import Call, Job

    job = Job(executor_id="e-0", job_id="M000", job_key="e-0/M000", prefix="wren.jobs/e-0/M000", bucket="b",
              storage={"name": "localhost", "config": {}}, func_key="wren.jobs/e-0/funcs/x.pickle",
              config={"fan-out-test": {"endpoint": "http://127.0.0.1:9"}})
    calls = [Call(f"{i:05d}") for i in range(4)]
    answer = handle_payload(encode({"job": job, "calls": calls, "remote_invoker": {"backend": "fan-out-test"}}))
    info = answer["remote_invoker"]
    assert info["error"] is None and info["started"] == 2
    assert info["failed"] == [{"call_id": "00001", "error": "throttled for too long"},
                              {"call_id": "00003", "error": "throttled for too long"}]
    assert _PlatformBackend.started == ["00000", "00002"]

    # a backend this runtime does not have: nothing started, and the answer says why
    answer = handle_payload(encode({"job": job, "calls": calls, "remote_invoker": {"backend": "openwhisk"}}))
    assert answer["remote_invoker"]["started"] == 0
    assert "pip install wren-backend-openwhisk" in answer["remote_invoker"]["error"]
