"""Local storage follows no symbolic link planted in a bucket's folder: whoever can write the
storage folder cannot make wren read, write, list or delete anything outside it (an outsider
playing an attacker had ``wren clean`` delete a folder of theirs through one)."""
import os
import subprocess
import sys

import pytest

import wren
from wren.errors import StorageInvalidObjectError
from wren.localconfig import LocalhostConfig
from wren.storage.local import LocalStorage, files_storage


@pytest.fixture
def victim(tmp_path):
    home = tmp_path / "victim"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "thesis.txt").write_text("precious")
    (home / "notes.status").write_text("precious too")
    return home


def intact(victim):
    return (victim / "docs" / "thesis.txt").read_text() == "precious" and (victim / "notes.status").exists()


def test_a_linked_folder_is_not_read_written_listed_or_emptied(tmp_path, victim):
    st = LocalStorage(LocalhostConfig(storage_root=str(tmp_path / "store")))
    st.put_object("b", "jobs/real/x", b"1")
    os.symlink(victim, tmp_path / "store" / "b" / "jobs" / "linked")
    assert [o.key for o in st.list_objects("b", "jobs/")] == ["jobs/linked", "jobs/real/x"]  # the link, as a name
    assert list(st.list_objects("b", "jobs/linked/")) == []
    for call in (lambda: st.get_object("b", "jobs/linked/docs/thesis.txt"),
                 lambda: st.head_object("b", "jobs/linked/docs/thesis.txt"),
                 lambda: st.put_object("b", "jobs/linked/docs/thesis.txt", b"overwritten"),
                 lambda: st.put_object("b", "jobs/linked/new/file", b"planted")):
        with pytest.raises(StorageInvalidObjectError, match="symbolic link"):
            call()
    st.delete_objects("b", ["jobs/linked/docs/thesis.txt", "jobs/linked/notes.status", "jobs/real/x"])
    st.delete_objects("b", [o.key for o in st.list_objects("b", "jobs/")])  # the link itself goes
    assert intact(victim) and not (victim / "new").exists()
    assert list(st.list_objects("b", "jobs/")) == []


def test_the_machines_own_files_still_follow_links(tmp_path, victim):
    os.symlink(victim, tmp_path / "data")
    files = files_storage("/")
    bucket, _, key = str(tmp_path / "data" / "docs" / "thesis.txt").lstrip("/").partition("/")
    assert files.get_object(bucket, key) == b"precious"


@pytest.mark.parametrize("args", [["--all", "--force"], ["--force"]])
def test_wren_clean_deletes_nothing_through_a_planted_link(storage_root, victim, args):
    jobs = os.path.join(str(storage_root), "wren-data", "wren.jobs")
    n = len(args)
    os.makedirs(os.path.join(jobs, f"deadbee{n}-0", "M000"), exist_ok=True)
    os.symlink(victim, os.path.join(jobs, f"cafe000{n}-0"))  # a whole executor's prefix
    os.symlink(victim, os.path.join(jobs, f"deadbee{n}-0", "M000", "evil"))  # a folder inside one
    with wren.function_executor() as ex:
        ex.get_result(ex.map(abs, [-1]))
        ex.clean()
    r = subprocess.run([sys.executable, "-m", "wren.cli", "clean", *args], capture_output=True, text=True,
                       timeout=120)
    assert intact(victim), (r.stdout, r.stderr, sorted(str(p) for p in victim.rglob("*")))


def test_the_default_storage_folder_must_be_private(tmp_path, monkeypatch):
    """The default root is in the shared temporary folder: one made first by somebody else (or
    writable by others, or a link) is refused with the fix, before anything is read or written."""
    import tempfile

    from wren.errors import StorageError
    from wren.localconfig import default_storage_root

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    squatted = tmp_path / f"wren-{os.getuid()}"
    squatted.mkdir()
    squatted.chmod(0o777)
    st = LocalStorage(LocalhostConfig(storage_root=default_storage_root()))
    with pytest.raises(StorageError, match="not a private folder of yours.*localhost.storage_root"):
        st.put_object("b", "k", b"1")
    squatted.chmod(0o700)
    if os.getuid() == 0:
        os.chown(squatted, 65534, 65534)
        with pytest.raises(StorageError, match="owner uid 65534"):
            LocalStorage(LocalhostConfig(storage_root=default_storage_root())).list_keys("b")
        os.chown(squatted, 0, 0)
    squatted.rmdir()
    os.symlink(tmp_path / "elsewhere", squatted)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    with pytest.raises(StorageError, match="a symbolic link"):
        LocalStorage(LocalhostConfig(storage_root=default_storage_root())).put_object("b", "k", b"1")
    squatted.unlink()
    fresh = LocalStorage(LocalhostConfig(storage_root=default_storage_root()))
    fresh.put_object("b", "k", b"1")  # made by us, 0700: accepted
    assert fresh.get_object("b", "k") == b"1" and (squatted.stat().st_mode & 0o777) == 0o700


def test_a_planted_huge_lease_is_not_read_whole(tmp_path):
    from wren.client.lease import is_live

    st = LocalStorage(LocalhostConfig(storage_root=str(tmp_path / "store")))
    st.put_object("b", "wren.jobs/cafe-0/.lease", b"{" + b" " * (8 << 20))
    ranges = []
    real = st.get_object

    def spy(bucket, key, byte_range=None):
        ranges.append(byte_range)
        return real(bucket, key, byte_range)

    st.get_object = spy
    assert is_live(st, "b", "wren.jobs/cafe-0") is False
    assert ranges == [(0, 4095)]
