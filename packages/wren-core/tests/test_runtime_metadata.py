"""Runtime metadata cached on this machine and in storage."""
from wren.runtimes.metadata import STORAGE_PREFIX, MetadataCache
from wren.storage.local import LocalStorage
from wren.localconfig import LocalhostConfig


def test_metadata_cached_locally_and_in_storage(tmp_path):
    storage = LocalStorage(LocalhostConfig(storage_root=str(tmp_path / "storage")))
    meta = {"python": "3.11", "wren": "0.1.0", "modules": ["numpy"]}
    first = MetadataCache(tmp_path / "laptop", storage=storage)
    first.put("openwhisk-x-act", meta, token="img@0.0.1")
    key = f"{STORAGE_PREFIX}openwhisk-x-act.json"
    assert storage.object_exists(storage.default_bucket, key)

    # another machine: nothing cached locally, the same storage
    other = MetadataCache(tmp_path / "ci-box", storage=storage)
    assert other.get("openwhisk-x-act", token="img@0.0.2") is None  # redeployed since: stale
    assert other.get("openwhisk-x-act", token="img@0.0.1") == meta
    assert (tmp_path / "ci-box" / "openwhisk-x-act.json").exists()  # now cached locally too

    other.delete("openwhisk-x-act")
    assert not storage.object_exists(storage.default_bucket, key)
    assert MetadataCache(tmp_path / "third", storage=storage).get("openwhisk-x-act") is None


def test_unreadable_storage_is_only_a_cache_miss(tmp_path, caplog):
    class Broken:
        default_bucket = "b"

        def get_object(self, *a):
            raise OSError("storage unreachable")

        def put_object(self, *a):
            raise OSError("storage unreachable")

    cache = MetadataCache(tmp_path, storage=Broken())
    assert cache.get("r") is None
    with caplog.at_level("WARNING", logger="wren.runtimes"):
        cache.put("r", {"python": "3.11"}, token="t")
    assert "could not cache" in caplog.text
    assert cache.get("r", token="t") == {"python": "3.11"}  # the local copy
