
import pytest

from wren_testsupport.isolation import isolated_environment
from wren_testsupport.s3server import S3Server


@pytest.fixture(scope="session")
def s3_server():
    """A SeaweedFS S3 server on 127.0.0.1 for the whole session (fresh data dir)."""
    with S3Server() as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def _isolated_wren(tmp_path_factory):
    """No user config file and local storage in a fresh folder, for the whole session."""
    root = tmp_path_factory.mktemp("wren-storage")
    with isolated_environment(tmp_path_factory.mktemp("home"), {"WREN_LOCALHOST__STORAGE_ROOT": root}):
        yield


@pytest.fixture(scope="session")
def cos_section(s3_server):
    """The ``ibm_cos`` config section pointing at the test server (HMAC auth)."""
    return s3_server.cos_section("wren-test", retries=2)


@pytest.fixture(scope="session")
def cos_storage(cos_section):
    from wren.config import parse_section
    from wren_storage_cos import COSConfig, COSStorage

    storage = COSStorage(parse_section(COSConfig, "ibm_cos", cos_section))
    yield storage
    storage.close()
