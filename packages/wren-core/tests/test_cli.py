"""The wren command, run as a user runs it."""
import json
import os
import subprocess
import sys

import pytest


def run(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "wren.cli", *args], capture_output=True, text=True, env=e, timeout=120)


def test_hello():
    r = run("hello", "tester")
    assert r.returncode == 0, r.stderr
    assert "Hello tester! wren is working" in r.stdout


def test_verify_json():
    r = run("verify", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 4 and all(row["ok"] for row in rows)


def test_missing_backend_is_one_line_with_the_fix():
    r = run("hello", "-b", "knative", env={"WREN_DISABLE_PLUGINS": "1"})  # as if not installed
    assert r.returncode == 1
    assert r.stderr.strip() == "wren: error: compute backend 'knative' is not installed: pip install wren-backend-knative"


def test_config_show_masks_secrets(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("ibm_cos:\n  endpoint: http://127.0.0.1:1\n  secret_access_key: SUPERSECRET123\n  api_key: APIKEY456\n")
    r = run("config", "show", "--json", env={"WREN_CONFIG_FILE": str(f)})
    assert r.returncode == 0, r.stderr
    assert "SUPERSECRET123" not in r.stdout and "APIKEY456" not in r.stdout
    shown = json.loads(r.stdout)["config"]["ibm_cos"]
    assert shown["secret_access_key"] == "****" and shown["endpoint"] == "http://127.0.0.1:1"


def test_plugins_json():
    r = run("plugins", "--json")
    rows = json.loads(r.stdout)
    assert {"kind": "compute", "name": "localhost", "distribution": "wren-core"} in [
        {k: row[k] for k in ("kind", "name", "distribution")} for row in rows
    ]


@pytest.mark.parametrize("args", [["--help"], ["hello", "--help"], ["runtime", "deploy", "--help"], ["config", "show", "--help"]])
def test_help_everywhere(args):
    r = run(*args)
    assert r.returncode == 0 and "usage:" in r.stdout


def test_bad_usage_exit_code():
    assert run("frobnicate").returncode == 2
    assert run().returncode == 2


def test_clean_removes_job_data():
    import wren

    ex = wren.function_executor(clean_on_exit=False)
    ex.get_result(ex.map(len, [b"x" * 100_000]))
    ex.close()
    assert ex.storage_backend.list_keys(ex.bucket, ex.prefix + "/")
    r = run("clean", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["removed_objects"] >= 1
    assert ex.storage_backend.list_keys(ex.bucket, ex.prefix + "/") == []


def test_runtime_commands_on_localhost_say_what_is_possible():
    r = run("runtime", "build", "myrt")
    assert r.returncode == 1 and "has no runtimes to build" in r.stderr
    r = run("runtime", "metadata", "--json")
    assert json.loads(r.stdout)["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_logs_of_a_job():
    import wren
    from wren.testing import funcs

    with wren.function_executor() as ex:
        futures = ex.map(funcs.printer, [1, 2])
        ex.get_result(futures)
        job = f"{ex.executor_id}/{futures[0].job_id}"
    r = run("logs", job)
    assert r.returncode == 0, r.stderr
    assert "--- call 00000 ---" in r.stdout and "hello from call 2" in r.stdout
    assert job in run("logs").stdout
    r = run("logs", "nonexistent-0")
    assert r.returncode == 1 and "no saved logs" in r.stderr
