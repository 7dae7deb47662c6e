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

The built-in localhost backend and local storage run these same suites. The suites import pytest
only when used, so ``wren.testing.funcs`` (the functions they run on workers) imports anywhere.
"""
from typing import Any

__all__ = ["ComputeBackendConformance", "StorageBackendConformance"]


def __getattr__(name: str) -> Any:
    if name == "ComputeBackendConformance":
        from wren.testing.compute import ComputeBackendConformance

        return ComputeBackendConformance
    if name == "StorageBackendConformance":
        from wren.testing.storage import StorageBackendConformance

        return StorageBackendConformance
    raise AttributeError(f"module 'wren.testing' has no attribute {name!r}")
