"""Data partitioning: line integrity, chunk planning, word count map_reduce, URLs, bad input."""
from __future__ import annotations

import collections
import http.server
import io
import threading
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wren
from wren.errors import InvalidInputError
from wren.localconfig import LocalhostConfig
from wren.partitioner import chunk_stream, line_chunks, make_obj, partition, plan_ranges
from wren.storage.local import LocalStorage
from wren.testing.funcs import count_words, merge_counts


# -- the chunk reader ------------------------------------------------------------------------------

def _opener(data: bytes):
    def open_range(a: int, b: int):
        return io.BytesIO(data[a:b + 1])
    return open_range


def _chunks(data: bytes, chunk_size: int) -> list[bytes]:
    out = []
    for rng in plan_ranges(len(data), chunk_size):
        if rng is None:
            out.append(b"")
            continue
        out.append(b"".join(line_chunks(_opener(data), rng[0], rng[1], len(data), block=7, window=3)))
    return out


lines_text = st.lists(
    st.one_of(st.text(alphabet="ab \t\r", max_size=30), st.just(""), st.text(alphabet="x", min_size=50, max_size=200)),
    max_size=40,
).map(lambda ls: "\n".join(ls))


@settings(max_examples=300, deadline=None)
@given(text=lines_text, final_newline=st.booleans(), chunk_size=st.integers(1, 120))
def test_every_line_seen_by_exactly_one_chunk(text, final_newline, chunk_size):
    data = (text + ("\n" if final_newline else "")).encode()
    chunks = _chunks(data, chunk_size)
    assert b"".join(chunks) == data  # in order, no byte lost or repeated
    start = 0  # chunks concatenate to the data, so each one's position is known
    for rng, chunk in zip(plan_ranges(len(data), chunk_size), chunks):
        if chunk:
            # a chunk starts at a line start inside its range and ends at a line end
            assert rng[0] <= start <= rng[1]
            assert start == 0 or data[start - 1:start] == b"\n"
            assert chunk.endswith(b"\n") or start + len(chunk) == len(data)
        start += len(chunk)
    seen = [line for c in chunks for line in io.BytesIO(c).readlines()]
    assert seen == io.BytesIO(data).readlines()


@settings(max_examples=60, deadline=None)
@given(text=lines_text, chunk_size=st.integers(1, 64))
def test_line_integrity_over_local_storage(tmp_path_factory, text, chunk_size):
    storage = LocalStorage(LocalhostConfig(storage_root=str(tmp_path_factory.mktemp("s"))))
    data = text.encode()
    storage.put_object("b", "k", data)
    seen = []
    for part, rng in enumerate(plan_ranges(len(data), chunk_size)):
        spec = {"storage": "localhost", "bucket": "b", "key": "k", "url": None, "part": part,
                "data_byte_range": rng, "size": len(data), "chunk_size": chunk_size}
        obj = make_obj(spec, storage, {})
        seen.extend(obj.data_stream.readlines())
        obj.close()
    assert seen == io.BytesIO(data).readlines()


def test_long_line_spanning_many_chunks_and_windows():
    data = b"short\n" + b"y" * 100_000 + b"\nend"
    got = [b"".join(line_chunks(_opener(data), a, b, len(data), window=16)) for a, b in plan_ranges(len(data), 1000)]
    assert got[0] == b"short\n" + b"y" * 100_000 + b"\n"
    assert all(g == b"" for g in got[1:-1])
    assert got[-1] == b"end"


def test_chunk_stream_reads_only_its_range():
    data = b"".join(f"line {i}\n".encode() for i in range(10_000))
    opened = []

    def open_range(a, b):
        opened.append((a, b))
        return io.BytesIO(data[a:b + 1])

    f = chunk_stream(open_range, 1000, 1999, len(data))
    lines = f.readlines()
    assert lines[0].startswith(b"line") and b"".join(lines) in data
    assert opened[0] == (999, 1999) and all(b - a < 70_000 for a, b in opened)


def test_plan_ranges():
    assert plan_ranges(0, 10) == [None]
    assert plan_ranges(10) == [(0, 9)]
    assert plan_ranges(10, 4) == [(0, 3), (4, 7), (8, 9)]
    assert plan_ranges(10, chunk_n=3) == [(0, 3), (4, 7), (8, 9)]
    assert plan_ranges(2, chunk_n=5) == [(0, 0), (1, 1)]


# -- planning on the client ------------------------------------------------------------------------

@pytest.fixture
def fexec(storage_root):
    with wren.function_executor(config={"localhost": {"worker_processes": 2}}) as ex:
        yield ex


TEXTS = {
    "a.txt": "the quick brown fox\njumps over the lazy dog\n" * 300,
    "b.txt": "to be or not to be\nthat is the question" * 1 + "\n" + "lorem ipsum dolor\n" * 500,
    "c.txt": "",
    "d.txt": "one single line without a final newline and " + "word " * 2000,
}


@pytest.fixture
def corpus(fexec):
    prefix = f"texts-{uuid.uuid4().hex[:6]}/"
    for name, text in TEXTS.items():
        fexec.storage_backend.put_object(fexec.bucket, prefix + name, text.encode())
    return prefix


def expected_counts() -> collections.Counter:
    c: collections.Counter = collections.Counter()
    for text in TEXTS.values():
        c.update(text.split())
    return c


def test_partition_plan(fexec, corpus):
    bucket = fexec.bucket
    args, objs, groups = partition(fexec, f"file://{bucket}/{corpus}", None, 1000, None)
    sizes = {k: len(v.encode()) for k, v in TEXTS.items()}
    expected_calls = sum(max(1, -(-s // 1000)) for s in sizes.values())
    assert len(args) == len(objs) == expected_calls
    assert [len(g) for g in groups] == [max(1, -(-sizes[k] // 1000)) for k in sorted(TEXTS)]
    assert sorted(i for g in groups for i in g) == list(range(expected_calls))
    assert all(a == ((), {}) for a in args)
    o = objs[1]
    assert o["bucket"] == bucket and o["key"] == corpus + "a.txt" and o["data_byte_range"] == (1000, 1999)
    assert o["size"] == sizes["a.txt"] and o["storage"] == "localhost"
    import pickle

    assert len(pickle.dumps(objs[0])) < 400


def test_partition_keys_plain_and_extra_args(fexec, corpus):
    bucket = fexec.bucket
    items = [(f"{bucket}/{corpus}a.txt", 1), {"obj": f"file://{bucket}/{corpus}b.txt", "x": 2}]
    args, objs, groups = partition(fexec, items, {"y": 5}, None, 2)

    def f(obj, x, y):
        pass

    assert len(objs) == 4 and groups == [[0, 1], [2, 3]]
    assert args[0] == ((1,), {"y": 5}) and args[2] == ((), {"x": 2, "y": 5})
    args, _, _ = partition(fexec, items, {"y": 5}, None, 2, func=f)
    assert args[0] == ((), {"x": 1, "y": 5})


@pytest.mark.parametrize(
    "iterdata, kwargs, match",
    [
        (["wren-data/x"], {"chunk_size": 0}, "chunk_size must be a positive"),
        (["wren-data/x"], {"chunk_n": -1}, "chunk_n must be a positive"),
        (["wren-data/x"], {"chunk_size": 10, "chunk_n": 2}, "not both"),
        (["nobucketkey"], {}, "names no object"),
        (["s3x://b/k"], {}, "unknown scheme 's3x://'"),
        (["file:///k"], {}, "has no bucket"),
        ([42], {}, "must be an object reference"),
        ([{"x": 1}], {}, "without an 'obj' key"),
        (["http://"], {}, "not a valid URL"),
    ],
)
def test_bad_input(fexec, iterdata, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        partition(fexec, iterdata, None, kwargs.get("chunk_size"), kwargs.get("chunk_n"))


def test_missing_objects_are_input_errors(fexec, corpus):
    with pytest.raises(InvalidInputError, match="no object"):
        partition(fexec, [f"{fexec.bucket}/{corpus}nope.txt"], None, None, None)
    with pytest.raises(InvalidInputError, match="does not exist"):
        partition(fexec, ["file://no-such-bucket-here"], None, None, None)
    with pytest.raises(InvalidInputError, match="no objects in that prefix"):
        partition(fexec, [f"{fexec.bucket}/{corpus}empty/"], None, None, None)


def test_map_rejects_bad_input_before_invoking(fexec):
    with pytest.raises(InvalidInputError, match="unknown scheme"):
        fexec.map(count_words, ["zz://b/k"])
    assert fexec.futures == []


# -- running --------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunking", [{"chunk_size": 777}, {"chunk_n": 3}, {}])
@pytest.mark.parametrize("one_per_object", [False, True])
def test_word_count_map_reduce(fexec, corpus, chunking, one_per_object):
    iterdata = f"file://{fexec.bucket}/{corpus}"
    _, objs, groups = partition(fexec, iterdata, None, chunking.get("chunk_size"), chunking.get("chunk_n"))
    n_before = len(fexec.futures)
    out = fexec.map_reduce(count_words, iterdata, merge_counts, reducer_one_per_object=one_per_object, **chunking)
    n_reducers = len(groups) if one_per_object else 1
    # the map futures, then the reducer future(s)
    assert isinstance(out, list) and len(out) == len(objs) + n_reducers and len(groups) == len(TEXTS)
    assert [f.kind for f in out[: len(objs)]] == ["map"] * len(objs)
    if one_per_object:
        per_object = fexec.get_result(out)
        assert isinstance(per_object, list) and len(per_object) == len(TEXTS)
        total = merge_counts(per_object)
    else:
        total = fexec.get_result(out)
    assert total == expected_counts()
    assert all(f.success for f in out[: len(objs)])  # the map futures stay inspectable
    assert len(fexec.futures) - n_before == len(objs) + n_reducers


def test_map_with_extra_args_and_obj_attributes(fexec, corpus):
    def f(obj, factor, tag):
        return (obj.key, obj.part, obj.data_byte_range, obj.size, obj.bucket, factor * len(obj.data_stream.read()), tag)

    fs = fexec.map(f, [{"obj": f"{fexec.bucket}/{corpus}a.txt", "factor": 2}], extra_args={"tag": "t"}, chunk_n=2)
    res = fexec.get_result(fs)
    size = len(TEXTS["a.txt"])
    assert [r[1] for r in res] == [0, 1]
    assert res[0][2] == (0, size // 2 - 1) and res[0][3] == size and res[0][6] == "t"
    assert sum(r[5] for r in res) == 2 * size


# -- URLs -----------------------------------------------------------------------------------------

class _RangeHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    ranges = True
    seen: list[str] = []

    def log_message(self, *a):
        pass

    def _body(self):
        return self.files.get(self.path)

    def do_HEAD(self):
        body = self._body()
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):
        body = self._body()
        if body is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        self.seen.append(rng or "")
        if rng and self.ranges:
            a, b = rng.split("=")[1].split("-")
            a, b = int(a), min(int(b), len(body) - 1)
            part = body[a:b + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b}/{len(body)}")
        else:
            part = body
            self.send_response(200)
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        self.wfile.write(part)


@pytest.fixture
def http_files():
    class Handler(_RangeHandler):
        files = {"/a.txt": TEXTS["a.txt"].encode(), "/d.txt": TEXTS["d.txt"].encode()}
        seen = []

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Handler
    server.shutdown()
    server.server_close()


def test_url_partitioning(fexec, http_files):
    base, handler = http_files
    urls = [base + "/a.txt", base + "/d.txt"]
    _, objs, groups = partition(fexec, urls, None, 1000, None)
    assert [len(g) for g in groups] == [-(-len(TEXTS["a.txt"]) // 1000), -(-len(TEXTS["d.txt"]) // 1000)]
    assert objs[0]["url"] == urls[0] and objs[0]["size"] == len(TEXTS["a.txt"])
    total = fexec.get_result(fexec.map_reduce(count_words, urls, merge_counts, chunk_size=1000))
    c = collections.Counter(TEXTS["a.txt"].split()) + collections.Counter(TEXTS["d.txt"].split())
    assert total == c
    assert any(s.startswith("bytes=") for s in handler.seen)


def test_url_without_ranges_is_one_call(fexec, http_files):
    base, handler = http_files
    handler.ranges = False
    _, objs, groups = partition(fexec, [base + "/a.txt"], None, 100, None)
    assert len(objs) == 1 and objs[0]["data_byte_range"] is None
    res = fexec.get_result(fexec.map(count_words, [base + "/a.txt"], chunk_size=100))
    assert res[0] == collections.Counter(TEXTS["a.txt"].split())


def test_url_errors(fexec, http_files):
    base, _ = http_files
    with pytest.raises(InvalidInputError, match="404"):
        partition(fexec, [base + "/missing"], None, None, None)
    with pytest.raises(InvalidInputError, match="cannot be reached"):
        partition(fexec, ["http://127.0.0.1:9/x"], None, None, None)
