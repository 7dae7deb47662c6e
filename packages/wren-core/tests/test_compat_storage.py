"""Schemes (a storage's name, s3://), local paths as obj iterdata on the localhost backend,
PyWren 1.x's url parameter, the Storage names of both peers and clean(cs=..., force=...)."""
from __future__ import annotations

import functools
import http.server
import threading
import uuid

import pytest

import wren
from wren.errors import ConfigError, InvalidInputError, StorageNoSuchBucketError


@pytest.fixture
def fexec():
    with wren.function_executor() as ex:
        yield ex


LINES = b"".join(b"row %03d\n" % i for i in range(30))


def lines(obj):
    return obj.path, obj.data_stream.read()


def count(obj):
    return obj.data_stream.read().count(b"\n")


def test_storage_name_is_a_scheme(fexec):
    st = wren.Storage()
    key = f"compat/{uuid.uuid4().hex}.txt"
    st.put_object(st.bucket, key, LINES)
    for scheme in ("localhost", "file"):
        assert fexec.get_result(fexec.map(count, f"{scheme}://{st.bucket}/{key}")) == [30]


def test_s3_scheme_means_the_s3_compatible_storage(installed_plugin):
    cos = installed_plugin("storage", "ibm_cos")
    with wren.function_executor() as fexec:
        if cos is None:
            with pytest.raises(InvalidInputError, match="wren-storage-cos"):
                fexec.map(count, "s3://bucket/key")
        else:  # installed: s3:// is its storage, which without an ibm_cos section says what to set
            with pytest.raises(ConfigError, match="config section 'ibm_cos' needs 'endpoint'"):
                fexec.map(count, "s3://bucket/key")


def test_local_folder_and_files_are_partitioned(fexec, tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_bytes(LINES)
    (tmp_path / "logs" / "b.log").write_bytes(LINES[:40])
    folder = str(tmp_path / "logs") + "/"
    out = fexec.get_result(fexec.map(lines, folder))
    assert out == [(str(tmp_path / "logs" / "a.log"), LINES), (str(tmp_path / "logs" / "b.log"), LINES[:40])]
    # no trailing slash, chunks keep whole lines, and a single file
    assert sum(fexec.get_result(fexec.map(count, str(tmp_path / "logs"), obj_chunk_size=25))) == 35
    assert fexec.get_result(fexec.map_reduce(count, [str(tmp_path / "logs" / "a.log")], sum, obj_chunk_number=4)) == 30


def test_missing_local_path_is_reported(fexec, tmp_path):
    with pytest.raises(InvalidInputError, match="no such file or folder"):
        fexec.map(count, str(tmp_path / "nothing-here"))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_folder(tmp_path):
    (tmp_path / "data.txt").write_bytes(LINES)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def pywren_url_function(url):
    return url.path, url.data_stream.read().count(b"\n")


def test_pywren_url_parameter(fexec, http_folder):
    target = f"{http_folder}/data.txt"
    assert fexec.get_result(fexec.map(pywren_url_function, [target])) == [(target, 30)]
    assert fexec.get_result(fexec.map(pywren_url_function, [{"url": target}])) == [(target, 30)]


def test_storage_peer_names():
    st = wren.Storage()
    assert st.head_bucket(st.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(StorageNoSuchBucketError):
        st.head_bucket(f"no-such-bucket-{uuid.uuid4().hex[:8]}")
    co = st.put_cobject(b"one")
    assert st.get_cobject(co) == b"one"
    assert st.get_cobject(bucket=co.bucket, key=co.key) == b"one"
    others = [st.put_cloudobject(b"x"), st.put_cloudobject(b"y")]
    st.delete_cloudobjects(others + [co])
    assert not any(st.list_keys(c.bucket, c.key) for c in others + [co])


def test_clean_cloudobjects_and_force(fexec):
    st = wren.Storage()
    cs = [st.put_cloudobject(b"a"), st.put_cloudobject(b"b")]
    fs = fexec.map(str, [1])
    fexec.get_result(fs)
    assert fexec.clean(cs=cs) == 2
    assert not st.list_keys(cs[0].bucket, cs[0].key)
    assert fexec.clean(fs=fs, force=True) >= 0
    with pytest.raises(InvalidInputError, match="cloud objects"):
        fexec.clean(cs=["not a cloud object"])


def test_cos_s3_and_storage_name_schemes_resolve_to_the_cos_plugin(tmp_path):
    """A storage plugin claiming ``cos://`` (as wren-storage-cos does) also answers ``s3://``
    and its own name, ``ibm_cos://`` (planned on the client; the plugin is a stand-in)."""
    from wren import plugins
    from wren.localconfig import LocalhostConfig
    from wren.partitioner import partition
    from wren.storage.local import LocalStorage

    class FakeCOS(LocalStorage):
        name = "ibm_cos"
        schemes = ("cos",)

    class Plugin:
        @wren.hookimpl
        def wren_storage_backends(self):
            return [wren.StorageBackendSpec("ibm_cos", FakeCOS, LocalhostConfig)]

    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(Plugin(), name="fake-cos")
    with plugins.use_plugin_manager(pm):
        cfg = {"ibm_cos": {"storage_root": str(tmp_path)}}
        cos = wren.Storage(config=cfg, backend="ibm_cos")
        cos.put_object("bkt", "data/a.txt", LINES)
        with wren.function_executor(config=cfg) as ex:
            for scheme in ("cos", "s3", "ibm_cos"):
                _, objs, _ = partition(ex, f"{scheme}://bkt/data/", None, None, 2)
                assert [(o["storage"], o["key"], o["part"]) for o in objs] == [("ibm_cos", "data/a.txt", 0),
                                                                               ("ibm_cos", "data/a.txt", 1)]
