"""The peers' config files and config dicts, translated with a warning naming each key."""
from __future__ import annotations

import warnings

import pytest
import yaml

import wren
from wren.config import load_config


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WREN_CONFIG_FILE", raising=False)
    monkeypatch.delenv("LITHOPS_CONFIG_FILE", raising=False)
    return tmp_path


LITHOPS = {
    "lithops": {"backend": "localhost", "storage": "localhost", "mode": "localhost", "execution_timeout": 120,
                "data_cleaner": False, "monitoring_interval": 1, "log_level": "INFO"},
    "localhost": {"worker_processes": 2, "runtime": "python3"},
    "ibm": {"iam_api_key": "SECRET-IAM-KEY"},
    "ibm_cos": {"storage_bucket": "b", "region": "eu-de", "access_key_id": "AKID", "secret_access_key": "SECRET-SAK"},
    "aws": {"access_key_id": "x"},
}


def test_lithops_config_file_from_env(home, monkeypatch):
    path = home / "elsewhere.yaml"
    path.write_text(yaml.safe_dump(LITHOPS))
    monkeypatch.setenv("LITHOPS_CONFIG_FILE", str(path))
    with pytest.warns(UserWarning) as record:
        cfg = load_config()
    message = str(record[0].message)
    assert cfg.wren.runtime_timeout == 120 and cfg.wren.clean_on_exit is False and cfg.wren.monitor_interval == 1
    assert cfg.section("localhost")["worker_processes"] == 2 and "runtime" not in cfg.section("localhost")
    assert cfg.section("ibm_cos")["secret_access_key"] == "SECRET-SAK"
    assert cfg.section("ibm_cos")["api_key"] == "SECRET-IAM-KEY"
    assert "lithops.execution_timeout -> wren.runtime_timeout" in message
    for ignored in ("lithops.mode", "localhost.runtime", "aws (whole section)"):
        assert ignored in message
    assert "SECRET" not in message  # key names only, never values
    assert cfg.source_file == str(path)


def test_lithops_default_file(home):
    (home / ".lithops").mkdir()
    (home / ".lithops" / "config").write_text(yaml.safe_dump({"lithops": {"backend": "localhost"}}))
    with pytest.warns(UserWarning, match="lithops.backend -> wren.backend"):
        assert load_config().wren.backend == "localhost"


def test_pywren_config_file(home):
    (home / ".pywren_config").write_text(yaml.safe_dump({
        "pywren": {"storage_bucket": "bucket1", "storage_backend": "localhost", "compute_backend": "localhost",
                   "workers": 3, "runtime_timeout": 300, "rabbitmq_monitor": True, "invoke_pool_threads": 64},
        "ibm_cos": {"endpoint": "https://cos.example", "access_key": "AK", "secret_key": "SK",
                    "private_endpoint": "https://private.example"},
        "rabbitmq": {"amqp_url": "amqp://u:p@127.0.0.1/"},
    }))
    with pytest.warns(UserWarning) as record:
        cfg = load_config()
    message = str(record[0].message)
    assert cfg.wren.max_workers == 3 and cfg.wren.runtime_timeout == 300 and cfg.wren.monitoring == "rabbitmq"
    assert cfg.section("localhost")["storage_bucket"] == "bucket1"
    assert cfg.section("ibm_cos") == {"endpoint": "https://cos.example", "access_key_id": "AK", "secret_access_key": "SK"}
    assert "ibm_cos.access_key -> ibm_cos.access_key_id" in message
    assert "pywren.invoke_pool_threads" in message and "ibm_cos.private_endpoint" in message


def test_wren_config_file_wins(home):
    (home / ".wren").mkdir()
    (home / ".wren" / "config.yaml").write_text(yaml.safe_dump({"wren": {"runtime_timeout": 42}}))
    (home / ".pywren_config").write_text(yaml.safe_dump({"pywren": {"runtime_timeout": 300}}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config().wren.runtime_timeout == 42


def test_lithops_config_dict(home):
    config = {"lithops": {"backend": "localhost", "storage": "localhost", "log_level": False}}
    with pytest.warns(UserWarning, match="the config dict"):
        with wren.FunctionExecutor(config=config, log_level=False) as fexec:
            assert fexec.backend == "localhost"
            assert fexec.get_result(fexec.map(str, [1])) == ["1"]


def test_pywren_executor_keywords(home):
    with wren.function_executor(compute_backend="localhost", workers=2, storage_backend="localhost") as fexec:
        assert fexec.max_workers == 2 and fexec.storage_backend.name == "localhost"
