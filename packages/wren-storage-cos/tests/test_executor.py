"""End to end: localhost compute with COS storage, and partitioned word count on the S3 server."""
import collections
import uuid

import pytest

import wren
from wren.testing.funcs import count_words, merge_counts


@pytest.fixture(scope="module")
def fexec(cos_section):
    config = {"wren": {"storage": "ibm_cos"}, "ibm_cos": cos_section, "localhost": {"worker_processes": 2}}
    with wren.function_executor(config=config) as ex:
        yield ex


def double(x):
    return x * 2


def test_map_on_cos_storage(fexec, cos_section):
    assert fexec.storage_backend.name == "ibm_cos"
    big = b"z" * 200_000  # over the inline limit: goes through storage, read by range
    fs = fexec.map(double, list(range(20)) + [big])
    assert fexec.get_result(fs) == [x * 2 for x in range(20)] + [big * 2]
    keys = fexec.storage_backend.list_keys(cos_section["storage_bucket"], fexec.prefix + "/")
    assert any("/funcs/" in k for k in keys) and any(k.endswith("data.pickle") for k in keys)


def test_storage_client_and_executor_cleanup(cos_section):
    config = {"wren": {"storage": "ibm_cos"}, "ibm_cos": cos_section}
    ex = wren.function_executor(config=config)
    assert ex.get_result(ex.call_async(double, 21)) == 42
    prefix = ex.prefix + "/"
    ex.close()
    st = wren.Storage(config=config)
    assert st.backend == "ibm_cos" and st.list_keys(cos_section["storage_bucket"], prefix) == []


TEXTS = {
    "a.txt": "the quick brown fox\njumps over the lazy dog\n" * 2000,
    "b.txt": "to be or not to be\n" + "lorem ipsum dolor\n" * 3000 + "no final newline",
    "c/d.txt": ("x" * 5000 + " y\n") * 20,
}


@pytest.fixture(scope="module")
def corpus(fexec, cos_section):
    prefix = f"texts-{uuid.uuid4().hex[:6]}/"
    for name, text in TEXTS.items():
        fexec.storage_backend.put_object(cos_section["storage_bucket"], prefix + name, text.encode())
    return prefix


@pytest.mark.parametrize("chunking", [{"chunk_size": 4096}, {"chunk_n": 4}])
@pytest.mark.parametrize("one_per_object", [False, True])
def test_word_count(fexec, cos_section, corpus, chunking, one_per_object):
    expected = collections.Counter()
    for t in TEXTS.values():
        expected.update(t.split())
    iterdata = f"cos://{cos_section['storage_bucket']}/{corpus}"
    n = len(fexec.futures)
    out = fexec.map_reduce(count_words, iterdata, merge_counts, reducer_one_per_object=one_per_object, **chunking)
    total = merge_counts(fexec.get_result(out)) if one_per_object else fexec.get_result(out)
    assert total == expected
    sizes = [len(t.encode()) for t in TEXTS.values()]
    chunks = sum(-(-s // 4096) for s in sizes) if "chunk_size" in chunking else 4 * len(sizes)
    assert len(fexec.futures) - n == chunks + (len(TEXTS) if one_per_object else 1)


def test_cos_objects_from_a_local_storage_executor(cos_section, corpus, monkeypatch):
    """cos:// data read by an executor whose own storage is local: the plugin is built from
    the ibm_cos section on both sides."""
    config = {"ibm_cos": cos_section, "localhost": {"worker_processes": 1}}
    with wren.function_executor(config=config) as ex:
        assert ex.storage_backend.name == "localhost"
        key = f"cos://{cos_section['storage_bucket']}/{corpus}a.txt"
        total = ex.get_result(ex.map_reduce(count_words, [key], merge_counts, chunk_size=10_000))
    assert total == collections.Counter(TEXTS["a.txt"].split())


def obj_text(obj):
    return obj.data_stream.read().decode()


@pytest.mark.parametrize("scheme", ["cos", "s3", "ibm_cos"])
def test_every_scheme_of_s3_storage_reaches_the_object(fexec, cos_section, corpus, scheme):
    """cos://, s3:// and the storage's own name as a scheme (Lithops' spelling) name objects
    on the real S3 server."""
    bucket = cos_section["storage_bucket"]
    url = f"{scheme}://{bucket}/{corpus}c/d.txt"
    assert fexec.get_result(fexec.map(obj_text, [url])) == [TEXTS["c/d.txt"]]


def test_wren_clean_spares_a_live_executor_on_s3(cos_section):
    """The lease lives in the bucket: `wren clean` from another process leaves the data of a
    running executor alone, and --force removes it."""
    import os
    import subprocess
    import sys

    config = {"wren": {"storage": "ibm_cos", "clean_on_exit": False}, "ibm_cos": cos_section}
    env = dict(os.environ, **{f"WREN_IBM_COS__{k.upper()}": str(v) for k, v in cos_section.items()},
               WREN_STORAGE="ibm_cos")
    with wren.function_executor(config=config) as ex:
        ex.get_result(ex.map(double, [b"q" * 200_000]))
        st, prefix = ex.storage_backend, ex.prefix + "/"
        assert st.list_keys(cos_section["storage_bucket"], prefix)
        r = subprocess.run([sys.executable, "-m", "wren.cli", "clean"], capture_output=True, text=True, env=env,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        assert "still running" in r.stdout and st.list_keys(cos_section["storage_bucket"], prefix)
        r = subprocess.run([sys.executable, "-m", "wren.cli", "clean", "--force"], capture_output=True, text=True,
                           env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        assert st.list_keys(cos_section["storage_bucket"], prefix) == []
