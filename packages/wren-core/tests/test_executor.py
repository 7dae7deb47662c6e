"""The executor's public API on the localhost backend."""
import os
import signal
import sys
import textwrap
import time

import pytest

import wren
from wren.errors import InvalidArgumentBindingError, InvalidInputError


@pytest.fixture
def fexec():
    with wren.function_executor() as ex:
        yield ex


def ident(x):
    return x


def pair(a, b):
    return (a, b)


def kw(name, greeting="hello"):
    return f"{greeting} {name}"


def test_readme_example():
    fexec = wren.function_executor()
    futures = fexec.map(lambda x: x * 2, range(1000))
    assert fexec.get_result(futures) == [x * 2 for x in range(1000)]
    fexec.close()


@pytest.mark.parametrize(
    "iterdata, expected",
    [
        (range(5), [0, 1, 2, 3, 4]),
        ({3, 1, 2}, None),  # a set: one call per element, set iteration order
        ([[1, 2], [3]], [[1, 2], [3]]),  # a list item is one argument
        ((7, 8), [7, 8]),  # a tuple of items is a collection of items
    ],
)
def test_iterdata_kinds(fexec, iterdata, expected):
    got = fexec.get_result(fexec.map(ident, iterdata))
    assert got == (list(iterdata) if expected is None else expected)


def test_list_of_dicts_bind_keywords(fexec):
    got = fexec.get_result(fexec.map(kw, [{"name": "ann"}, {"name": "bob", "greeting": "hi"}]))
    assert got == ["hello ann", "hi bob"]


def test_tuples_spread(fexec):
    assert fexec.get_result(fexec.map(pair, [(1, 2), (3, 4)])) == [(1, 2), (3, 4)]


def test_extra_args_appended(fexec):
    assert fexec.get_result(fexec.map(pair, [1, 2], extra_args=("x",))) == [(1, "x"), (2, "x")]
    assert fexec.get_result(fexec.map(kw, ["a"], extra_args={"greeting": "yo"})) == ["yo a"]


def test_get_result_returns_only_unread_in_order(fexec):
    first = fexec.map(ident, [1, 2])
    assert fexec.get_result() == [1, 2]
    second = fexec.map(ident, [3])
    third = fexec.call_async(ident, 4)
    assert fexec.get_result() == [3, 4]
    assert fexec.get_result() == []
    assert fexec.get_result(first + second + [third]) == [1, 2, 3, 4]
    fexec.call_async(ident, "only")
    assert fexec.get_result() == "only"  # one call_async future: the value itself


def slow_ident(x):
    time.sleep(0.2)
    return (x, os.getpid(), time.time())


def test_max_workers_one_runs_calls_one_at_a_time():
    with wren.function_executor(max_workers=1) as ex:
        res = ex.get_result(ex.map(slow_ident, range(4)))
    assert [r[0] for r in res] == [0, 1, 2, 3]
    ends = sorted(r[2] for r in res)
    assert all(b - a >= 0.18 for a, b in zip(ends, ends[1:]))  # never two at once


def test_map_reduce_one_worker_does_not_deadlock():
    with wren.function_executor(max_workers=1) as ex:
        assert ex.get_result(ex.map_reduce(ident, range(6), sum)) == 15


def fan_out(n):
    inner = wren.function_executor()
    return inner.map(ident, range(n))


def fan_out_single(n):
    inner = wren.function_executor()
    return inner.call_async(ident, n * 10)


def test_nested_executor_returns_futures(fexec):
    assert fexec.get_result(fexec.call_async(fan_out, 4)) == [0, 1, 2, 3]
    assert fexec.get_result(fexec.map(fan_out_single, [1, 2])) == [10, 20]


def inherit_config(_):
    inner = wren.function_executor()
    return (inner.config.wren.runtime_timeout, inner.prefix)


def test_nested_executor_inherits_config():
    with wren.function_executor(runtime_timeout=123) as ex:
        timeout, prefix = ex.get_result(ex.call_async(inherit_config, 0))
        assert timeout == 123
        assert prefix.startswith(ex.prefix + "/")  # its data is cleaned with the parent's


class BoolRaises:
    def __bool__(self):
        raise RuntimeError("no truth value")

    def __eq__(self, other):
        raise RuntimeError("no comparison")


def make_boolraises(_):
    return BoolRaises()


def test_result_whose_bool_raises(fexec):
    res = fexec.get_result(fexec.map(make_boolraises, [1, 2]))
    assert len(res) == 2 and all(isinstance(r, BoolRaises) for r in res)


class PropRaises:
    def __init__(self, v):
        self.v = v

    @property
    def boom(self):
        raise RuntimeError("property raised")


def read_v(p):
    return p.v


def test_argument_with_raising_property(fexec):
    assert fexec.get_result(fexec.map(read_v, [PropRaises(1), PropRaises(2)])) == [1, 2]


def pid_and_sleep(x):
    if x == 0:
        time.sleep(60)
    return os.getpid()


def test_worker_killed_mid_call():
    with wren.function_executor() as ex:
        victim = ex.call_async(os.getpid, ())
        pid = ex.get_result(victim)
        assert pid != os.getpid()
        slow = ex.call_async(time.sleep, 60)
        deadline = time.time() + 10
        while slow.status != "running" and time.time() < deadline:
            time.sleep(0.02)
        # find the worker running it: the pool reports the head call as running
        from wren.worker.pool import WorkerPool

        pool = WorkerPool._pools[ex.compute.size]
        worker = next(w for w in pool._workers if w.inflight and w.inflight[0].call.call_id == slow.call_id
                      and w.inflight[0].job.job_key == slow.job_key)
        os.kill(worker.pid, signal.SIGKILL)
        t0 = time.time()
        with pytest.raises(wren.WorkerDiedError, match="SIGKILL"):
            ex.get_result(slow)
        assert time.time() - t0 < 10
        assert ex.get_result(ex.map(ident, range(5))) == list(range(5))  # the pool recovered


def test_sys_exit_in_function(fexec):
    with pytest.raises(wren.WorkerDiedError, match="sys.exit"):
        fexec.get_result(fexec.call_async(sys.exit, 3))


def test_local_helper_module_is_shipped(tmp_path, monkeypatch, fexec):
    pkg = tmp_path / "wren_test_helpers_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .inner import triple\n")
    (pkg / "inner.py").write_text("def triple(x):\n    return 3 * x\n")
    (tmp_path / "wren_test_helper_mod.py").write_text(
        textwrap.dedent(
            """
            import wren_test_helpers_pkg

            def work(x):
                return wren_test_helpers_pkg.triple(x) + 1
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import wren_test_helper_mod

    # without shipping, the worker cannot import it: proof that shipping does the work
    with pytest.raises(wren.SerializationError, match="No module named 'wren_test_helper_mod'.*include_modules"):
        fexec.get_result(fexec.call_async(wren_test_helper_mod.work, 1, include_modules=None))
    assert fexec.get_result(fexec.map(wren_test_helper_mod.work, [1, 2])) == [4, 7]


def test_futures_state_and_stats(fexec):
    fut = fexec.call_async(ident, 1)
    fexec.wait([fut])
    assert fut.ready and fut.status == "success"
    assert fexec.get_result(fut) == 1 and fut.done
    for key in ("host_submit_tstamp", "worker_start_tstamp", "worker_func_start_tstamp",
                "worker_func_end_tstamp", "worker_end_tstamp", "host_status_done_tstamp",
                "func_data_size_bytes", "func_result_size"):
        assert key in fut.stats, key
    assert fut.stats["worker_func_start_tstamp"] <= fut.stats["worker_func_end_tstamp"]


def test_wait_return_modes(fexec):
    futures = fexec.map(time.sleep, [0, 2])
    done, not_done = fexec.wait(futures, return_when=wren.ANY_COMPLETED)
    assert len(done) >= 1
    done, not_done = fexec.wait(futures, return_when=wren.ALWAYS)
    assert len(done) + len(not_done) == 2
    done, not_done = fexec.wait(futures, timeout=0.01)
    assert not_done or len(done) == 2
    done, not_done = fexec.wait(futures)
    assert len(done) == 2 and not not_done


def test_get_result_timeout(fexec):
    fut = fexec.call_async(time.sleep, 3)
    with pytest.raises(wren.WaitTimeoutError, match="not finished"):
        fexec.get_result(fut, timeout=0.2)
    assert fexec.get_result(fut) is None


def test_several_executors_share_the_pool():
    a = wren.function_executor()
    b = wren.function_executor()
    fa = a.map(slow_ident, range(2))
    fb = b.map(slow_ident, range(2))
    ra, rb = a.get_result(fa), b.get_result(fb)
    assert [r[0] for r in ra] == [0, 1] and [r[0] for r in rb] == [0, 1]
    assert a.compute._pool is b.compute._pool  # one warm pool served both
    pids = {w.pid for w in a.compute._pool._workers}
    assert {r[1] for r in ra + rb} <= pids
    a.close()
    b.close()


def test_owners_take_turns_past_those_at_their_cap():
    """The round-robin the pool and the docker backend share: empty and gone owners leave the
    turns, an owner at its cap keeps its place, the one chosen goes to the back."""
    import collections
    import types

    from wren.worker.turns import next_in_turn

    owners = {name: types.SimpleNamespace(queue=list(q), full=False)
              for name, q in (("a", "1"), ("b", ""), ("c", "12"), ("d", "1"))}
    turns = collections.deque(["gone", "a", "b", "c", "d"])
    owners["a"].full = True
    assert next_in_turn(turns, owners, lambda o: o.full) == ("c", owners["c"])
    assert list(turns) == ["d", "a", "c"]  # gone and b dropped; a passed over, kept
    assert next_in_turn(turns, owners, lambda o: o.full)[0] == "d"
    assert next_in_turn(turns, owners, lambda o: True) is None and list(turns) == ["a", "c", "d"]
    owners["a"].full = False
    assert [next_in_turn(turns, owners, lambda o: o.full)[0] for _ in range(3)] == ["a", "c", "d"]
    assert next_in_turn(collections.deque(), owners, lambda o: False) is None


def test_context_manager_cleans(storage_root):
    with wren.function_executor() as ex:
        ex.get_result(ex.map(ident, [b"x" * 100_000]))
        prefix = ex.prefix
        assert ex.storage_backend.list_keys(ex.bucket, prefix + "/")
    assert ex.storage_backend.list_keys(ex.bucket, prefix + "/") == []


def test_keep_data_when_asked():
    ex = wren.function_executor(clean_on_exit=False)
    ex.get_result(ex.map(ident, [1]))
    ex.close()
    keys = ex.storage_backend.list_keys(ex.bucket, ex.prefix + "/")
    assert keys
    ex.storage_backend.delete_objects(ex.bucket, keys)


def test_clean_by_futures(fexec):
    f1 = fexec.map(ident, [b"a" * 100_000])
    f2 = fexec.map(ident, [b"b" * 100_000])
    fexec.get_result()
    assert fexec.clean(f1) >= 1
    keys = fexec.storage_backend.list_keys(fexec.bucket, fexec.prefix + "/")
    assert any(k.startswith(f2[0].job_prefix) for k in keys)
    assert not any(k.startswith(f1[0].job_prefix + "/") for k in keys)


def test_temporary_data_is_private(storage_root):
    with wren.function_executor() as ex:
        ex.get_result(ex.map(ident, [b"x" * 100_000]))
        for key in ex.storage_backend.list_keys(ex.bucket, ex.prefix + "/"):
            path = os.path.join(str(storage_root), ex.bucket, *key.split("/"))
            assert os.stat(path).st_mode & 0o077 == 0, key
            assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0


def test_storage_client_api(storage_root):
    st = wren.Storage()
    assert st.bucket == "wren-data"
    st.put_object(st.bucket, "t/a.txt", b"0123456789")
    assert st.get_object(st.bucket, "t/a.txt", extra_get_args={"Range": "bytes=2-4"}) == b"234"
    assert st.get_object(st.bucket, "t/a.txt", extra_get_args={"Range": "bytes=-3"}) == b"789"
    assert st.get_object(st.bucket, "t/a.txt", stream=True).read() == b"0123456789"
    assert st.head_object(st.bucket, "t/a.txt")["content-length"] == "10"
    assert st.list_keys(st.bucket, "t/") == ["t/a.txt"]
    assert st.list_objects(st.bucket, "t/")[0]["Size"] == 10
    co = st.put_cloudobject(b"cloud")
    assert st.get_cloudobject(co) == b"cloud"
    st.delete_cloudobject(co)
    st.delete_objects(st.bucket, ["t/a.txt"])
    assert st.list_keys(st.bucket, "t/") == []
    with pytest.raises(InvalidInputError, match="Range"):
        st.get_object(st.bucket, "x", extra_get_args={"Range": "lines=1"})


def test_binding_checked_before_anything_is_stored(fexec):
    with pytest.raises(InvalidArgumentBindingError, match="call 1"):
        fexec.map(pair, [(1, 2), (1,)])
    with pytest.raises(InvalidArgumentBindingError, match="wrap it in a tuple"):
        fexec.map(ident, [{"y": 1}])
    assert fexec.futures == []
    assert fexec.storage_backend.list_keys(fexec.bucket, fexec.prefix + "/") == []


@pytest.mark.parametrize(
    "iterdata, match",
    [
        ((x for x in range(3)), "one-shot iterator"),
        ("abc", "strings are not split"),
        ({"a": 1}, "iterdata is a dict"),
        (5, "must be a list"),
    ],
)
def test_bad_iterdata(fexec, iterdata, match):
    with pytest.raises(InvalidInputError, match=match):
        fexec.map(ident, iterdata)


@pytest.mark.parametrize("timeout", [0, -1, "10", True])
def test_bad_timeout(fexec, timeout):
    with pytest.raises(InvalidInputError, match="timeout"):
        fexec.map(ident, [1], timeout=timeout)


def test_data_over_limit_is_refused_before_invoking():
    with wren.function_executor(data_limit=0.1) as ex:
        with pytest.raises(wren.errors.DataLimitError, match="through|storage"):
            ex.map(ident, [b"x" * 200_000])
        assert ex.futures == []
        assert ex.storage_backend.list_keys(ex.bucket, ex.prefix + "/") == []


def test_unpicklable_argument(fexec):
    import threading

    with pytest.raises(wren.SerializationError, match="cannot pickle"):
        fexec.map(ident, [threading.Lock()])


def unpicklable_result(_):
    import threading

    return threading.Lock()


def test_unpicklable_result_is_a_clear_error(fexec):
    with pytest.raises(wren.SerializationError, match="result of call"):
        fexec.get_result(fexec.call_async(unpicklable_result, 1))


def jitter(x):
    time.sleep((x % 7 + 3) / 100)  # long enough that running bars show on a slow machine
    return x


def test_plot_writes_pngs(fexec, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    futures = fexec.map(jitter, range(60))
    fexec.get_result(futures)
    paths = [fig.wren_path for fig in fexec.plot(futures, dst=str(tmp_path / "run"))]
    assert sorted(os.path.basename(p) for p in paths) == ["run_histogram.png", "run_timeline.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(p)
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 800
        assert pixels[..., :3].std() > 0.05  # drawn, not blank
        # tab:blue, opaque (running bars) or at alpha 0.6 (the concurrency area): blue well over red
        blue = ((pixels[..., 2] - pixels[..., 0]) > 0.25).sum()
        assert blue > 2000, (p, blue)  # the running bars / the concurrency area are there


def test_job_summary(fexec):
    fexec.get_result(fexec.map(ident, range(3)))
    (row,) = fexec.job_summary()
    assert row["calls"] == 3 and row["success"] == 3 and row["error"] == 0


class Scaler:
    def __init__(self, k):
        self.k = k

    def __call__(self, x):
        return self.k * x

    def scale(self, x):
        return self.k * x


def test_job_records_name_partials_methods_and_callable_instances(fexec):
    """Not the repr of the object (``functools.partial(<function pair at 0x...>, 1)``)."""
    import functools

    funcs = [ident, functools.partial(pair, 1), functools.partial(Scaler(2).scale), Scaler(3).scale, Scaler(3), len]
    for func in funcs:
        fexec.get_result(fexec.map(func, [[1]] if func is len else [1]))
    assert [row["function"] for row in fexec.job_summary()] == [
        "ident", "partial(pair)", "partial(Scaler.scale)", "Scaler.scale", "Scaler", "len"]
    with pytest.raises(InvalidArgumentBindingError, match=r"partial\(pair\)\(b\) cannot be called"):
        fexec.map(functools.partial(pair, 1), [(1, 2)])


def test_modules_the_runtime_lacks_are_shipped():
    """With the runtime's module list known (container backends), an installed pure-Python
    package it lacks travels with the function; one it has does not."""
    from wren import serialize

    import iniconfig  # installed here (with pytest), pure Python

    ns = {"iniconfig": iniconfig, "__name__": "__main__"}  # as if defined in the user's script
    exec("def uses_it():\n    return iniconfig.__name__\n", ns)
    uses_it = ns["uses_it"]

    runtime_has = {"wren", "cloudpickle"}
    assert "iniconfig" not in serialize.find_local_modules(uses_it)  # same environment: installed
    shipped = serialize.find_local_modules(uses_it, available=runtime_has)
    assert shipped == ["iniconfig"]
    assert serialize.find_local_modules(uses_it, available=runtime_has | {"iniconfig"}) == []


def megabyte(n):
    return bytes([n % 256]) * (1 << 20)


def test_a_long_lived_executor_lets_go_of_the_results_it_returned():
    """get_result hands the results out and the executor stops holding them (a loop of jobs
    grew the client by 3.6 GB over 1,000 jobs of 4 MiB); futures the program keeps stay whole
    and listed, and job_summary/plot still count every call."""
    import gc
    import weakref

    import wren.concurrent

    with wren.function_executor() as ex:
        fs = ex.map(megabyte, range(4))
        assert [v[:1] for v in ex.get_result(fs)] == [bytes([n]) for n in range(4)]
        gone = [weakref.ref(f) for f in fs]
        kept = ex.map(megabyte, [7])
        assert ex.get_result(kept)[0][:1] == b"\x07"
        del fs
        gc.collect()
        assert all(r() is None for r in gone)  # nothing of wren holds them (nor their results)
        assert ex.futures == kept and kept[0].result()[:1] == b"\x07"  # still whole
        assert [(r["calls"], r["success"]) for r in ex.job_summary()] == [(4, 4), (1, 1)]
        assert ex.get_result() == []  # nothing unread

    with wren.concurrent.Executor() as cex:
        assert len(list(cex.map(megabyte, range(6)))) == 6
        held = cex.function_executor._calls.futures  # what the wren executor holds itself
        deadline = time.monotonic() + 10
        while held and time.monotonic() < deadline:
            time.sleep(0.05)  # the last results are being settled
        assert held == []
