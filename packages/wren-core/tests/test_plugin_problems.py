"""A plugin that fails to load, or an entry-point name two distributions declare, is reported:
by ``wren plugins``, in the registry's problems, and in the "unknown backend" error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from wren import plugins
from wren.errors import PluginError

GOOD = '''
import wren
from wren.compute.localhost import LocalhostBackend

class Fine(LocalhostBackend):
    name = "{name}"

@wren.hookimpl
def wren_compute_backends():
    return [wren.ComputeBackendSpec("{name}", Fine)]
'''


def _dist(root, dist, ep_name, module, source):
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[wren]\n{ep_name} = {module}\n")
    (root / f"{module}.py").write_text(source)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path with: a plugin whose import fails, and two distributions that both
    declare the entry point 'twin'."""
    _dist(tmp_path, "wren-backend-acme", "acme", "wren_acme_broken", "import acme_sdk_that_is_missing\n")
    _dist(tmp_path, "wren-twin-one", "twin", "wren_twin_one", GOOD.format(name="twin_one"))
    _dist(tmp_path, "wren-twin-two", "twin", "wren_twin_two", GOOD.format(name="twin_two"))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture
def registry(site):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = plugins.create_plugin_manager(load_entry_points=True)
        with plugins.use_plugin_manager(pm):
            reg = plugins.get_registry()
            reg.load_all()
            reg.caught = [str(w.message) for w in caught]
            yield reg


def test_failed_and_duplicate_entry_points_are_problems(registry):
    problems = {(p["kind"], p["name"], p["distribution"]): p["error"] for p in registry.problems()}
    assert "acme_sdk_that_is_missing" in problems[("failed", "acme", "wren-backend-acme")]
    dup = [k for k in problems if k[0] == "duplicate"]
    assert len(dup) == 1 and dup[0][1] == "twin", problems
    text = problems[dup[0]]
    assert "wren-twin-one" in text and "wren-twin-two" in text and "uninstall one" in text
    # the first one still works, the broken one breaks nothing else
    names = registry.names("compute")
    assert "localhost" in names and len({"twin_one", "twin_two"} & set(names)) == 1
    assert any("twin" in m and "declared by" in m for m in registry.caught)


def test_unknown_backend_names_the_plugin_that_failed(registry):
    with pytest.raises(PluginError) as info:
        registry.get("compute", "acme_functions")
    msg = str(info.value)
    assert "unknown compute backend 'acme_functions'" in msg
    assert "'acme' from wren-backend-acme 1.0" in msg and "acme_sdk_that_is_missing" in msg


def test_known_backend_whose_distribution_failed_says_so(registry, monkeypatch):
    monkeypatch.setitem(plugins.KNOWN_DISTRIBUTIONS["compute"], "acme", "wren-backend-acme")
    with pytest.raises(PluginError) as info:
        registry.get("compute", "acme")
    msg = str(info.value)
    assert "installed but failed to load" in msg and "acme_sdk_that_is_missing" in msg
    assert "pip install" not in msg


def test_wren_plugins_shows_problems(site):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "wren.cli", "plugins"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 1, r.stderr  # problems fail a CI check of the installed plugins
    assert "FAILED to load: 'acme' from wren-backend-acme 1.0" in r.stdout and "acme_sdk_that_is_missing" in r.stdout
    assert "DUPLICATE entry point: 'twin'" in r.stdout
    r = subprocess.run([sys.executable, "-m", "wren.cli", "plugins", "--json"], capture_output=True, text=True,
                       env=env, timeout=120)
    rows = json.loads(r.stdout)
    assert {("failed", "acme"), ("duplicate", "twin")} <= {(row["kind"], row["name"]) for row in rows if row.get("error")}


def test_a_plugin_whose_hook_raises_is_reported():
    import wren

    fresh_pm = plugins.create_plugin_manager(load_entry_points=False)
    class Lazy:
        @wren.hookimpl
        def wren_compute_backends(self):
            import acme_lazy_sdk_that_is_missing  # noqa: F401 - the SDK imported inside the hook

    fresh_pm.register(Lazy(), name="acmelazy")
    registry = plugins.PluginRegistry(fresh_pm)
    with pytest.warns(RuntimeWarning, match="acme_lazy_sdk_that_is_missing"):
        with pytest.raises(PluginError) as info:
            registry.get("compute", "acmelazy")
    assert "'acmelazy'" in str(info.value) and "acme_lazy_sdk_that_is_missing" in str(info.value)
    assert any(p["name"] == "acmelazy" and "wren_compute_backends raised" in p["error"] for p in registry.problems())


def test_wren_plugins_says_which_extra_a_plugin_needs(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pika" else real(name, *a))
    rows = plugins.PluginRegistry(plugins.create_plugin_manager(load_entry_points=False)).describe()
    rabbit = next(r for r in rows if r["kind"] == "monitor" and r["name"] == "rabbitmq")
    assert rabbit["needs"] == "needs pika: pip install 'wren-core[rabbitmq]'"
    assert next(r for r in rows if r["name"] == "localhost")["needs"] == ""
