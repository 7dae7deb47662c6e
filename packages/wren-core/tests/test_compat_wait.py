"""wait() with Lithops' percentages and download_results, retry_on matching subclasses (client
and the map_reduce reducer), include_modules meaning what it means in both peers."""
from __future__ import annotations

import os
import textwrap
import time
import uuid

import pytest

import wren
from wren.errors import InvalidInputError


@pytest.fixture
def fexec():
    with wren.function_executor() as ex:
        yield ex


def wait_for_file(x, path):
    while x % 2 and not os.path.exists(path):
        time.sleep(0.01)
    return x


def test_wait_percentage(fexec, tmp_path):
    barrier = str(tmp_path / "go")
    fs = fexec.map(wait_for_file, range(4), extra_args=(barrier,))
    done, not_done = fexec.wait(fs, return_when=50)
    assert len(done) >= 2 and fs[1] in not_done and fs[3] in not_done
    open(barrier, "w").close()
    done, not_done = fexec.wait(fs, return_when=100)
    assert len(done) == 4 and not not_done


def test_wait_lithops_constants(fexec, tmp_path):
    barrier = str(tmp_path / "go")
    fs = fexec.map(wait_for_file, [1, 2], extra_args=(barrier,))
    done, not_done = fexec.wait(fs, return_when=0)  # Lithops' ALWAYS
    assert fs[0] in not_done
    done, _ = fexec.wait(fs, return_when=-1)  # Lithops' ANY_COMPLETED
    assert done and fs[0] not in done
    open(barrier, "w").close()
    assert fexec.get_result(fs) == [1, 2]


@pytest.mark.parametrize("bad", [101, -2, 0.5, True, "HALF"])
def test_wait_return_when_checked(fexec, bad):
    fs = fexec.map(str, [1])
    with pytest.raises(InvalidInputError, match="percentage"):
        fexec.wait(fs, return_when=bad)
    fexec.get_result(fs)


def test_download_results(fexec):
    fs = fexec.map(str, range(3))
    done, _ = fexec.wait(fs)
    assert all(f.ready for f in done)
    done, _ = fexec.wait(fs, download_results=True)
    assert all(f.done for f in done)
    assert fexec.get_result(fs) == ["0", "1", "2"]


def test_peer_wait_options_accepted(fexec):
    fs = fexec.map(str, [1])
    fexec.wait(fs, threadpool_size=8, wait_dur_sec=1)
    assert fexec.get_result(fs, THREADPOOL_SIZE=4, WAIT_DUR_SEC=1) == ["1"]
    with pytest.raises(TypeError, match="no_such_option"):
        fexec.get_result(fs, no_such_option=1)


# -- retry_on ------------------------------------------------------------------------------------

def refuse_once(marker, x):
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionRefusedError("refused")
    return x


def value_error_once(marker, x):
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError("bad")
    return x


def test_retry_on_matches_subclasses(tmp_path):
    with wren.function_executor(retries=1, retry_on=[ConnectionError]) as ex:
        f = ex.call_async(refuse_once, (str(tmp_path / "m"), 7))
        assert ex.get_result(f) == 7 and f.stats.get("retries") == 1


def test_retry_on_by_name_matches_subclasses(tmp_path):
    with wren.function_executor(retries=1, retry_on=["OSError"]) as ex:
        assert ex.get_result(ex.call_async(refuse_once, (str(tmp_path / "m"), 7))) == 7


def test_retry_on_does_not_match_other_types(tmp_path):
    with wren.function_executor(retries=1, retry_on=[ConnectionError]) as ex:
        f = ex.call_async(value_error_once, (str(tmp_path / "m"), 7))
        with pytest.raises(ValueError):
            ex.get_result(f)
        assert not f.stats.get("retries")


def test_reducer_waits_for_a_retried_subclass_failure(tmp_path):
    with wren.function_executor(retries=1, retry_on=[ConnectionError]) as ex:
        data = [(str(tmp_path / f"m{i}"), i) for i in range(4)]
        assert ex.get_result(ex.map_reduce(refuse_once, data, sum, spawn_reducer=wren.ALWAYS)) == 6


# -- include_modules -----------------------------------------------------------------------------

@pytest.fixture
def local_modules(tmp_path, monkeypatch):
    """Two local modules: ``a`` uses ``b``; unique names so no worker has them already."""
    tag = uuid.uuid4().hex[:8]
    a, b = f"wren_compat_a_{tag}", f"wren_compat_b_{tag}"
    (tmp_path / f"{b}.py").write_text("def inc(x):\n    return x + 1\n")
    (tmp_path / f"{a}.py").write_text(textwrap.dedent(f"""
        import {b}

        def work(x):
            return {b}.inc(x) * 10
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    return importlib.import_module(a), a, b


def test_include_modules_default_ships_what_is_needed(fexec, local_modules):
    mod, _, _ = local_modules
    assert fexec.get_result(fexec.map(mod.work, [1, 2])) == [20, 30]


def test_include_modules_empty_list_analyses(fexec, local_modules):
    mod, _, _ = local_modules
    assert fexec.get_result(fexec.call_async(mod.work, 1, include_modules=[])) == 20


def test_include_modules_none_ships_nothing(fexec, local_modules):
    mod, a, _ = local_modules
    with pytest.raises(wren.SerializationError, match=a):
        fexec.get_result(fexec.call_async(mod.work, 1, include_modules=None))


def test_include_modules_list_ships_only_those(fexec, local_modules):
    mod, a, b = local_modules
    with pytest.raises(wren.SerializationError, match=f"No module named .{b}"):
        fexec.get_result(fexec.call_async(mod.work, 1, include_modules=[a]))
    assert fexec.get_result(fexec.call_async(mod.work, 1, include_modules=[a, b])) == 20
