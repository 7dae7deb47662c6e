"""Nothing hangs, nothing is orphaned, bad input is refused up front (reliability issue), and
the programs an outsider migrating from Lithops/PyWren found broken."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest

import wren
from wren.client import lease


def sleepy(seconds):
    time.sleep(seconds)
    return seconds


def test_closing_fails_pending_futures_at_once():
    ex = wren.function_executor()
    fut = ex.call_async(sleepy, 30)
    ex.close()
    t0 = time.monotonic()
    with pytest.raises(wren.WrenError, match="was closed"):
        fut.result()
    with pytest.raises(wren.WrenError, match="was closed"):
        ex.get_result([fut])
    assert time.monotonic() - t0 < 5


def die_once(i, marker):
    if i == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)
    return i


def die_always(i):
    if i == 1:
        os._exit(9)
    return i


def test_reducer_learns_of_a_dead_map_call_promptly():
    with wren.function_executor() as ex:
        fs = ex.map_reduce(die_always, range(4), sum, spawn_reducer=wren.ALWAYS, timeout=300)
        t0 = time.monotonic()
        reducer = fs[-1]
        with pytest.raises(wren.WorkerDiedError):
            reducer.result()  # the reducer itself fails with the map call's error
        assert time.monotonic() - t0 < 60, "the reducer waited out its timeout"


def test_reducer_waits_for_a_retried_map_call(tmp_path):
    with wren.function_executor(retries=2) as ex:
        fs = ex.map_reduce(die_once, [(i, str(tmp_path / "died")) for i in range(4)], sum,
                           spawn_reducer=wren.ALWAYS, timeout=300)
        assert ex.get_result(fs) == 6
        assert os.path.exists(tmp_path / "died")


def _clean(*extra):
    return subprocess.run([sys.executable, "-m", "wren.cli", "clean", *extra], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))


def test_wren_clean_spares_a_live_executor_and_force_removes_it():
    with wren.function_executor(clean_on_exit=False) as ex:
        ex.get_result(ex.map(len, [(b"x" * 100_000,)]))
        st, prefix = ex.storage_backend, ex.prefix + "/"
        assert lease.is_live(st, ex.bucket, ex.prefix)
        r = _clean()
        assert r.returncode == 0, r.stderr
        assert "still running" in r.stdout and st.list_keys(ex.bucket, prefix), "a live executor's data was removed"
        r = _clean("--force")
        assert r.returncode == 0, r.stderr
        assert st.list_keys(ex.bucket, prefix) == []


def test_an_expired_lease_protects_nothing(monkeypatch):
    ex = wren.function_executor(clean_on_exit=False)
    ex.get_result(ex.map(len, [(b"y" * 100_000,)]))
    st, bucket, prefix = ex.storage_backend, ex.bucket, ex.prefix
    ex._submitter.lease._stop.set()  # the client "dies": no more renewals, the lease stays
    assert lease.is_live(st, bucket, prefix)
    assert not lease.is_live(st, bucket, prefix, now=time.time() + lease.VALID_FOR + 1)
    ex.close(clean=True)


@pytest.mark.parametrize("bad, match", [
    (lambda ex: ex.wait(42), "fs must be a future"),
    (lambda ex: ex.get_result(42), "fs must be a future"),
    (lambda ex: ex.wait([], timeout=math.nan), "timeout"),
    (lambda ex: ex.call_async(abs, 1, extra_env={"A": None}), "leave the variable out"),
    (lambda ex: ex.call_async(abs, 1, timeout=math.inf), "timeout"),
    (lambda ex: ex.call_async(abs, 1, timeout=math.nan), "timeout"),
    (lambda ex: ex.call_async(abs, 1, timeout=1e20), "30 days"),
])
def test_bad_input_is_a_wren_error_naming_the_parameter(bad, match):
    with wren.function_executor() as ex:
        with pytest.raises(wren.InvalidInputError, match=match):
            bad(ex)
        assert ex.futures == []  # nothing was sent


class _LyingLength:
    def __len__(self):
        return 5

    def __iter__(self):
        return iter([1, 2])


def test_iterdata_whose_length_disagrees_is_refused():
    with wren.function_executor() as ex:
        with pytest.raises(wren.InvalidInputError, match="says it has 5 items"):
            ex.map(abs, _LyingLength())


@pytest.mark.parametrize("body", [42, None, {"a": 1}])
def test_put_object_refuses_what_is_not_bytes_before_storing(body):
    st = wren.Storage()
    with pytest.raises(wren.InvalidInputError, match="body must be bytes"):
        st.put_object(st.bucket, "never-created", body)
    assert "never-created" not in st.list_keys(st.bucket, "never-created")


# -- what a migrating user found (outsider tests) ------------------------------------------------

def map_with_id_first(id, x):  # noqa: A002 - Lithops' api_stats example
    return x + 7 + 0 * id


def storage_first(storage, key):
    return (key, type(storage).__name__)


def test_reserved_parameters_may_come_first():
    with wren.function_executor() as ex:
        assert ex.get_result(ex.map(map_with_id_first, range(4))) == [7, 8, 9, 10]
        assert ex.get_result(ex.map(storage_first, ["a"])) == [("a", "Storage")]
        assert ex.get_result(ex.call_async(map_with_id_first, 3)) == 10


def test_lithops_duration_stats():
    with wren.function_executor() as ex:
        fs = ex.map(sleepy, [0.1, 0.1])
        ex.get_result(fs)
        for f in fs:
            assert f.stats["worker_func_exec_time"] >= 0.1
            assert f.stats["worker_exec_time"] >= f.stats["worker_func_exec_time"]
            assert f.stats["host_job_create_tstamp"] <= f.stats["host_submit_tstamp"]


def put_text(text, storage):
    return storage.put_cloudobject(f"x {text}")


def test_clean_removes_the_cloud_objects_calls_made():
    ex = wren.function_executor(clean_on_exit=False)
    cos = ex.get_result(ex.map(put_text, ["a", "b"]))
    st = wren.Storage()
    assert st.get_cloudobject(cos[0]) == b"x a"
    ex.clean(clean_cloudobjects=False)
    assert st.get_cloudobject(cos[1]) == b"x b"  # kept when asked
    ex.clean()
    with pytest.raises(wren.StorageError):
        st.get_cloudobject(cos[0])
    ex.close()


def add(x, y):
    return x + y


def test_pywren_extra_params_spelling():
    with wren.function_executor() as ex:
        assert ex.get_result(ex.map(add, [1, 2], extra_params=(10,))) == [11, 12]


SCRIPT = '''
import traceback, wren
API_TOKEN = "tok-NOT-FOR-THE-BUCKET"  # kept in the script, not used by the function
def lookup(d):
    return d["k"]
fe = wren.function_executor(clean_on_exit=False)
try:
    fe.get_result(fe.call_async(lookup, ({},)))
except KeyError:
    traceback.print_exc()
st = fe.storage_backend
print("STORED", any(b"tok-NOT-FOR-THE-BUCKET" in st.get_object(fe.bucket, k) for k in st.list_keys(fe.bucket, fe.prefix + "/")))
fe.close(clean=True)
'''


def test_only_the_functions_own_source_lines_travel(tmp_path):
    """Source lines go with the function for readable tracebacks, but the rest of the script
    (and what a user keeps there) stays on the client (found by a plugin author's review)."""
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, WREN_PROGRESSBAR="0"))
    assert "STORED False" in r.stdout, r.stdout + r.stderr
    assert 'return d["k"]' in r.stderr and "KeyError" in r.stderr


def half_second(x):
    time.sleep(0.5)
    return x


def test_waiting_over_futures_of_two_executors_does_not_hang():
    import threading

    with wren.function_executor() as a, wren.function_executor() as b:
        fs = a.map(half_second, [1, 2]) + b.map(half_second, [3])
        waiter = threading.Thread(target=a.wait, args=(fs,), daemon=True)  # no timeout: it must return
        waiter.start()
        waiter.join(60)
        assert not waiter.is_alive(), "wait() over two executors' futures hung"
        assert a.get_result(fs) == [1, 2, 3]




def test_repr_of_a_config_masks_every_credential():
    from wren.config import load_config

    cfg = load_config({"ibm_cos": {"endpoint": "http://127.0.0.1:1", "storage_bucket": "b",
                                   "secret_access_key": "S3CR3T-KEY"},
                       "rabbitmq": {"amqp_url": "amqp://user:PASSW0RD@127.0.0.1:5672/"}})
    for text in (repr(cfg), str(cfg)):
        assert "S3CR3T-KEY" not in text and "PASSW0RD" not in text
    assert "amqp://user:****@127.0.0.1:5672/" in repr(cfg)


def fails_on_two(i):
    if i == 2:
        raise KeyError("two")
    return i


def test_a_failed_map_call_fails_the_reducer_not_map_reduce():
    with wren.function_executor() as ex:
        fs = ex.map_reduce(fails_on_two, range(4), sum)  # returns, whichever reducer path is taken
        with pytest.raises(KeyError, match="two"):
            fs[-1].result()
        assert [f.result() for f in fs[:2]] == [0, 1]


def lookup_key(d):
    return d["missing"]  # the raising line


def test_a_calls_failure_carries_its_frames_at_their_real_lines():
    """Rebuilt remote frames start at the function's first line and stand at the raising line,
    so IPython points at the right line (it was one off), and wren's client frames are gone."""
    import inspect

    with wren.function_executor() as ex:
        with pytest.raises(KeyError) as info:
            ex.get_result(ex.call_async(lookup_key, ({},)))
    frames = []
    tb = info.value.__traceback__
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    remote = [t for t in frames if t.tb_frame.f_code.co_name == "lookup_key"]
    first = inspect.getsourcelines(lookup_key)[1]
    assert remote and remote[-1].tb_lineno == first + 1
    assert remote[-1].tb_frame.f_code.co_firstlineno == first
    wren_frames = [t for t in frames if t.tb_frame.f_globals.get("__name__", "").startswith("wren.")]
    assert len(wren_frames) <= 1  # only the frame that re-raises it
