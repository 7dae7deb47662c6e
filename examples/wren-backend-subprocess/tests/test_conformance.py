"""wren's compute conformance suite, run against the example plugin as installed."""
import pytest

import wren
from wren.errors import ConfigError
from wren.testing import ComputeBackendConformance


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text("{}\n")
    monkeypatch.setenv("WREN_CONFIG_FILE", str(config))


class TestSubprocessBackend(ComputeBackendConformance):
    death_report_seconds = 20.0

    @pytest.fixture
    def executor_config(self, tmp_path):
        return {
            "wren": {"backend": "subprocess", "storage": "localhost"},
            "subprocess": {"processes": 2},
            "localhost": {"storage_root": str(tmp_path / "storage")},
        }


def test_found_through_its_entry_point():
    from wren.plugins import get_registry

    rows = [r for r in get_registry().describe() if r["name"] == "subprocess"]
    assert rows and rows[0]["distribution"] == "wren-backend-subprocess"


def test_bad_config_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="subprocess.processes"):
        wren.function_executor(backend="subprocess", config={"subprocess": {"processes": 0}})
