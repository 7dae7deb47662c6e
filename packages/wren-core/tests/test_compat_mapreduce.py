"""map_reduce as both peers shape it: map futures then reducer future(s), get_result gives the
reducer's value, extra_args_reduce, spawn_reducer, obj_reduce_by_key, chunksize, obj_* options."""
from __future__ import annotations

import os
import time

import pytest

import wren
from wren.client.futures_list import FuturesList
from wren.errors import InvalidInputError


@pytest.fixture
def fexec():
    with wren.function_executor() as ex:
        yield ex


def double(x):
    return 2 * x


def total(results):
    return sum(results)


def total_scaled(results, factor, offset=0):
    return sum(results) * factor + offset


def wait_for_file(x, path):
    """Finishes at once for even x; odd x waits until ``path`` exists (a barrier, no timing)."""
    while x % 2 and not os.path.exists(path):
        time.sleep(0.01)
    return x


def fails_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


def test_map_reduce_returns_map_then_reducer_futures(fexec):
    fs = fexec.map_reduce(double, range(5), total)
    assert isinstance(fs, FuturesList) and isinstance(fs, list) and len(fs) == 6
    assert [f.kind for f in fs] == ["map"] * 5 + ["reduce"]
    assert fexec.get_result(fs) == 20  # a bare value, as both peers
    # the map futures stay inspectable
    assert all(f.success and "worker_end_tstamp" in f.stats for f in fs[:5])
    assert [f.result() for f in fs[:5]] == [0, 2, 4, 6, 8]
    assert fs.get_result() == 20


def test_get_result_without_fs_returns_the_reducer_value(fexec):
    fexec.map_reduce(double, [1, 2, 3], total)
    assert fexec.get_result() == 12
    assert fexec.get_result() == []  # everything was read


def test_map_futures_alone_still_give_their_results(fexec):
    fs = fexec.map_reduce(double, [1, 2], total)
    assert fexec.get_result(fs[:2]) == [2, 4]
    assert fexec.get_result(fs) == 6


def test_extra_args_reduce_tuple_and_dict(fexec):
    assert fexec.get_result(fexec.map_reduce(double, [1, 2], total_scaled, extra_args_reduce=(10,))) == 60
    assert fexec.get_result(fexec.map_reduce(double, [1, 2], total_scaled,
                                             extra_args_reduce={"factor": 2, "offset": 1})) == 13
    fs = fexec.map_reduce(double, [1, 2], total_scaled, extra_args_reduce=(10,), reducer_wait_local=True)
    assert fexec.get_result(fs) == 60


def test_extra_args_reduce_checked_before_anything_runs(fexec):
    with pytest.raises(wren.InvalidInputError, match="reducer"):
        fexec.map_reduce(double, [1, 2], total_scaled)  # factor missing
    assert fexec.futures == []


@pytest.mark.parametrize("bad", [101, -5, "sometimes", 2.5])
def test_spawn_reducer_checked(fexec, bad):
    with pytest.raises(InvalidInputError, match="spawn_reducer"):
        fexec.map_reduce(double, [1], total, spawn_reducer=bad)


def test_spawn_reducer_always_starts_the_reducer_at_once(fexec, tmp_path):
    barrier = str(tmp_path / "go")
    fs = fexec.map_reduce(wait_for_file, list(range(4)), total, extra_args=(barrier,), spawn_reducer=wren.ALWAYS)
    # returned while the odd map calls still wait: the reducer was not held back
    assert not fs[1].ready and not fs[3].ready and fs[-1].kind == "reduce"
    open(barrier, "w").close()
    assert fexec.get_result(fs) == 6


def test_spawn_reducer_percentage_waits_for_that_share(fexec, tmp_path):
    barrier = str(tmp_path / "go")
    fs = fexec.map_reduce(wait_for_file, list(range(4)), total, extra_args=(barrier,), spawn_reducer=50)
    assert sum(f.ready for f in fs[:4]) >= 2 and not fs[1].ready
    open(barrier, "w").close()
    assert fexec.get_result(fs) == 6


def test_spawn_reducer_100_waits_for_every_map_call(fexec):
    fs = fexec.map_reduce(double, range(6), total, spawn_reducer=100)
    assert all(f.ready for f in fs[:6])
    assert fexec.get_result(fs) == 30


def test_a_failed_map_call_fails_the_map_reduce(fexec):
    with pytest.raises(ValueError, match="three"):
        fexec.get_result(fexec.map_reduce(fails_on_three, range(5), total, spawn_reducer=wren.ALWAYS))


def test_chunksize_is_accepted_and_checked(fexec):
    assert fexec.get_result(fexec.map(double, range(7), chunksize=3)) == [2 * i for i in range(7)]
    assert fexec.get_result(fexec.map_reduce(double, range(7), total, chunksize=2)) == 42
    with pytest.raises(InvalidInputError, match="chunksize"):
        fexec.map(double, [1], chunksize=0)


# -- objects -------------------------------------------------------------------------------------

LINES = b"".join(b"line %03d of the text\n" % i for i in range(40))


@pytest.fixture
def texts(fexec):
    st = wren.Storage()
    prefix = f"compat-{os.getpid()}-{time.monotonic_ns()}/"
    st.put_object(st.bucket, prefix + "a.txt", LINES)
    st.put_object(st.bucket, prefix + "b.txt", LINES[:200])
    return f"localhost://{st.bucket}/{prefix}"


def count_lines(obj):
    return obj.data_stream.read().count(b"\n")


def raw_bytes(obj):
    return obj.data_stream.read()


def test_obj_reduce_by_key_gives_one_result_per_object(fexec, texts):
    fs = fexec.map_reduce(count_lines, texts, total, obj_chunk_number=3, obj_reduce_by_key=True)
    assert [f.kind for f in fs].count("reduce_by_key") == 2
    per_object = fexec.get_result(fs)
    assert per_object == [40, LINES[:200].count(b"\n")]


def test_obj_chunk_size_keeps_lines_whole(fexec, texts):
    fs = fexec.map(raw_bytes, texts + "a.txt", obj_chunk_size=50)
    chunks = fexec.get_result(fs)
    assert len(chunks) == -(-len(LINES) // 50)
    assert b"".join(chunks) == LINES and all(c.endswith(b"\n") for c in chunks if c)


def test_obj_newline_none_gives_exact_chunks(fexec, texts):
    chunks = fexec.get_result(fexec.map(raw_bytes, texts + "a.txt", obj_chunk_size=50, obj_newline=None))
    assert [len(c) for c in chunks[:-1]] == [50] * (len(chunks) - 1)
    assert b"".join(chunks) == LINES


def test_obj_chunk_number_has_precedence(fexec, texts):
    chunks = fexec.get_result(fexec.map(raw_bytes, texts + "a.txt", obj_chunk_size=10, obj_chunk_number=2))
    assert len(chunks) == 2 and b"".join(chunks) == LINES


def test_obj_newline_checked(fexec, texts):
    with pytest.raises(InvalidInputError, match="obj_newline"):
        fexec.map(raw_bytes, texts, obj_newline=";")
