
import os

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


@pytest.fixture
def installed_plugin(monkeypatch):
    """``installed_plugin(kind, name)``: the distribution that provides wren's ``kind`` plugin
    ``name`` (e.g. ``"compute"``, ``"ibm_cf"``) in this environment, or None.

    nox installs wren-core alone; a developer's venv may hold the plugins too, and a test of what
    wren says about a missing plugin asserts what the installed one does instead. When it is
    installed, its ``WREN_<NAME>__*`` variables are removed for the test, so its config section is
    empty as in the isolated config file."""
    from wren.plugins import get_registry

    def find(kind, name):
        registry = get_registry()
        registry.load_all()
        claims = registry.provided(kind).get(name)
        if not claims:
            return None
        prefix = f"WREN_{name.upper()}__"
        for var in [v for v in os.environ if v.startswith(prefix)]:
            monkeypatch.delenv(var)
        return claims[0].distribution

    return find
