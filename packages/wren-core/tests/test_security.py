"""Job integrity and secrets (issue: reliability and security)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

import wren
from wren import plugins

SECRET_PASSWORD = "Sup3rS3cretPassw0rd"
SECRET_URL = f"amqp://wrenuser:{SECRET_PASSWORD}@127.0.0.1:1/"


def fails_loudly(x):
    print("call output", x)
    raise ValueError(f"bad value {x}")


def test_no_credential_in_logs_errors_or_storage(tmp_path, caplog, monkeypatch):
    import test_container_entrypoint as t

    log = open(tmp_path / "worker.log", "w")
    server, url = t.start_worker_server("--log-level", "DEBUG", stdout=log, stderr=log)
    monkeypatch.setenv("WREN_RABBITMQ__AMQP_URL", SECRET_URL)
    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(t._Plugin(), name="httptest-plugin")
    caplog.set_level(logging.DEBUG, logger="wren")
    try:
        cfg = {"wren": {"backend": "httptest", "log_level": "DEBUG"}, "httptest": {"url": url}}
        with plugins.use_plugin_manager(pm):
            ex = wren.function_executor(config=cfg, clean_on_exit=False)
            futures = ex.map(fails_loudly, [1, 2])
            big = ex.map(len, [(b"y" * 100_000,)])
            ex.wait(futures + big, throw_except=False)
            messages = [str(f.exception()) for f in futures]
            ex.close()
        stored = b""
        st = ex.storage_backend
        for key in st.list_keys(ex.bucket, ex.prefix + "/"):
            stored += st.get_object(ex.bucket, key)
        assert stored  # function, data and status records were stored
        worker_log = (tmp_path / "worker.log").read_text()
        config_show = subprocess.run([sys.executable, "-m", "wren.cli", "config", "show"], capture_output=True, text=True).stdout
        for where, text in [
            ("client log", caplog.text), ("worker log", worker_log), ("errors", " ".join(messages)),
            ("config show", config_show), ("futures' logs", " ".join(f.logs() for f in futures)),
        ]:
            assert SECRET_PASSWORD not in text, where
        assert SECRET_PASSWORD.encode() not in stored
        assert "call output 1" in futures[0].logs()
        st.delete_prefix(ex.bucket, ex.prefix + "/")
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def test_sections_of_unused_plugins_do_not_travel_with_jobs(monkeypatch):
    """Jobs carry the config (nested executors inherit it) but not the sections, credentials
    included, of compute backends and monitors the executor does not use."""
    monkeypatch.setenv("WREN_RABBITMQ__AMQP_URL", SECRET_URL)
    sent = []
    with wren.function_executor(backend="localhost") as ex:
        invoke = ex.compute.invoke
        monkeypatch.setattr(ex.compute, "invoke", lambda job, calls, ch: (sent.append(job), invoke(job, calls, ch))[1])
        assert ex.get_result(ex.map(len, ["ab", "c"])) == [2, 1]
    assert sent and all(SECRET_PASSWORD not in repr(job.to_wire()) for job in sent)
    assert "rabbitmq" not in sent[0]["config"] and "localhost" in sent[0]["config"]
    assert sent[0]["config"]["wren"]["backend"] == "localhost"
    with wren.function_executor(backend="localhost", monitoring="rabbitmq") as ex:  # in use: it travels
        assert ex._submitter.worker_config["rabbitmq"]["amqp_url"] == SECRET_URL


def test_signing_key_is_not_stored(tmp_path):
    with wren.function_executor(clean_on_exit=False, backend="localhost") as ex:
        ex.get_result(ex.map(len, [(b"z" * 100_000,)]))
        secret = ex._identity.secret
        blobs = [ex.storage_backend.get_object(ex.bucket, k) for k in ex.storage_backend.list_keys(ex.bucket, ex.prefix + "/")]
        assert blobs and not any(secret in b or secret.hex().encode() in b for b in blobs)
        ex.clean()


def test_tampered_data_is_refused(tmp_path):
    import test_container_entrypoint as t

    server, url = t.start_worker_server()
    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(t._Plugin(), name="httptest-plugin")
    try:
        cfg = {"wren": {"backend": "httptest"}, "httptest": {"url": url}}
        with plugins.use_plugin_manager(pm), wren.function_executor(config=cfg) as ex:
            # large arguments travel in a stored object; change it between store and run
            real_put = ex.storage_backend.put_object

            def tampering_put(bucket, key, body):
                if key.endswith("/data.pickle"):
                    body = (body if isinstance(body, bytes) else body.read())[:-10] + b"0123456789"
                real_put(bucket, key, body)

            ex.storage_backend.put_object = tampering_put
            fut = ex.call_async(len, (b"q" * 100_000,))
            with pytest.raises(wren.SerializationError, match="signature does not match"):
                ex.get_result(fut)
    finally:
        server.terminate()
        server.wait(10)


def test_local_files_are_private(storage_root):
    with wren.function_executor(clean_on_exit=False) as ex:
        ex.get_result(ex.map(len, [(b"p" * 100_000,)]))
        for dirpath, dirnames, filenames in os.walk(storage_root):
            for name in dirnames + filenames:
                mode = os.stat(os.path.join(dirpath, name)).st_mode
                assert mode & 0o077 == 0, (dirpath, name, oct(mode))
        ex.clean()
        assert ex.storage_backend.list_keys(ex.bucket, ex.prefix + "/") == []
