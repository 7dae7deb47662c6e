import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_wren(tmp_path_factory):
    """No user config file, and storage in a fresh folder, for the whole session."""
    root = tmp_path_factory.mktemp("wren-storage")
    home = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ("HOME", "WREN_CONFIG_FILE", "WREN_LOCALHOST__STORAGE_ROOT")}
    os.environ["HOME"] = str(home)
    os.environ.pop("WREN_CONFIG_FILE", None)
    os.environ["WREN_LOCALHOST__STORAGE_ROOT"] = str(root)
    yield root
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def storage_root(_isolated_wren):
    return _isolated_wren
