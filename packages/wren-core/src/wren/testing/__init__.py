"""Conformance suites every wren plugin runs against itself (needs pytest: ``wren-core[test]``).

Subclass in the plugin's own tests and provide the fixtures::

    from wren.testing import StorageBackendConformance, ComputeBackendConformance

    class TestMyStorage(StorageBackendConformance):
        @pytest.fixture
        def storage_backend(self):            # an instance of the plugin
            return MyStorage(MyConfig(...))

        @pytest.fixture
        def bucket(self, storage_backend):    # an existing, empty-enough bucket
            return "test-bucket"

    class TestMyCompute(ComputeBackendConformance):
        @pytest.fixture
        def executor_config(self):            # the config dict for wren.function_executor
            return {"wren": {"backend": "mine", "storage": "..."}, "mine": {...}}

The built-in localhost backend and local storage run these same suites.
"""
from wren.testing.compute import ComputeBackendConformance
from wren.testing.storage import StorageBackendConformance

__all__ = ["ComputeBackendConformance", "StorageBackendConformance"]
