"""wren-core's storage conformance suite, run against COSStorage on the local S3 server."""
import pytest

from wren.testing import StorageBackendConformance


class TestCOSConformance(StorageBackendConformance):
    @pytest.fixture
    def storage_backend(self, cos_storage):
        return cos_storage

    @pytest.fixture
    def bucket(self, cos_section):
        return cos_section["storage_bucket"]
