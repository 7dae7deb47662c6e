"""The built-in plugins pass the conformance suites every plugin runs."""
import pytest

from wren.localconfig import LocalhostConfig
from wren.storage.local import LocalStorage
from wren.testing import ComputeBackendConformance, StorageBackendConformance


class TestLocalStorage(StorageBackendConformance):
    @pytest.fixture
    def storage_backend(self, tmp_path):
        return LocalStorage(LocalhostConfig(storage_root=str(tmp_path)))

    @pytest.fixture
    def bucket(self, storage_backend):
        storage_backend.create_bucket("conformance")
        return "conformance"


class TestLocalhostCompute(ComputeBackendConformance):
    death_report_seconds = 20.0

    @pytest.fixture
    def executor_config(self):
        return {"wren": {"backend": "localhost", "storage": "localhost"}}
