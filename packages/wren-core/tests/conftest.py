
import pytest
from wren_testsupport.isolation import isolated_environment


@pytest.fixture(autouse=True, scope="session")
def _isolated_wren(tmp_path_factory):
    """No user config file, and storage in a fresh folder, for the whole session."""
    root = tmp_path_factory.mktemp("wren-storage")
    with isolated_environment(tmp_path_factory.mktemp("home"), {"WREN_LOCALHOST__STORAGE_ROOT": root}):
        yield root


@pytest.fixture
def storage_root(_isolated_wren):
    return _isolated_wren
