"""Local-filesystem storage: each bucket a folder, each key a file; atomic, multi-process safe."""
from __future__ import annotations

import dataclasses
import functools
import io
import os
import shutil
import stat
import tempfile
from typing import IO, Any, ClassVar
from collections.abc import Iterable, Iterator

from wren.errors import (
    InvalidInputError,
    StorageError,
    StorageInvalidObjectError,
    StorageNoSuchBucketError,
    StorageNoSuchKeyError,
)
from wren.localconfig import LocalhostConfig, default_storage_root
from wren.storage.base import ObjectInfo, StorageBackend
from wren.storage.ranges import RangeReader

TMP_PREFIX = ".wren-tmp-"


def _makedirs_private(path: str) -> None:
    """``os.makedirs`` giving every folder it creates mode 0700 (``makedirs`` applies the mode
    to the last folder only)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        _makedirs_private(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


class LocalStorage(StorageBackend):
    """Buckets are folders under ``storage_root``; writes go to a temporary file, then rename.

    Folders are created with mode 0700 and files 0600, so only their owner reads wren's data.
    Putting an object into a bucket that does not exist creates the bucket. No symbolic link
    below a bucket's folder is followed: one planted there (by whoever can write the folder)
    cannot lead a read, write, listing or deletion outside storage.
    """

    name: ClassVar[str] = "localhost"
    schemes: ClassVar[tuple[str, ...]] = ("file",)
    config_class: ClassVar[type] = LocalhostConfig
    local_only: ClassVar[bool] = True
    creates_bucket_on_put: ClassVar[bool] = True

    def __init__(self, config: LocalhostConfig | None = None, *, follow_links: bool = False):
        super().__init__(config or LocalhostConfig())
        self.root = self.config.storage_root
        #: follow symbolic links below a bucket's folder (the machine's own files: files_storage)
        self.follow_links = follow_links
        self._root_checked = False

    @property
    def default_bucket(self) -> str:
        return self.config.storage_bucket

    def worker_config(self) -> dict[str, Any]:
        # its fields are plain values: dataclasses.asdict's deep copies cost ~50 us a job
        return {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)}

    # -- paths ----------------------------------------------------------------------------------
    def _bucket_dir(self, bucket: str) -> str:
        if not bucket or "/" in bucket or bucket in (".", "..") or "\x00" in bucket:
            raise StorageError(f"invalid bucket name {bucket!r}: use a plain name without '/'")
        if not self._root_checked:
            self._check_root()
        return os.path.join(self.root, bucket)

    def _check_root(self) -> None:
        """The default root lies in the shared temporary folder (``/tmp/wren-<uid>/storage``),
        where another user may have made it first: refuse it unless it is a real folder of
        this user that no one else may write."""
        if self.root != default_storage_root() or not hasattr(os, "getuid"):
            self._root_checked = True
            return
        for folder in (os.path.dirname(self.root), self.root):
            try:
                st = os.lstat(folder)
            except FileNotFoundError:
                return  # created (mode 0700) by the first write; checked again after it
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
                what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else \
                    f"owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}"
                raise StorageError(
                    f"the default local storage folder {folder} is not a private folder of yours ({what}): "
                    "another user may have made it; set localhost.storage_root (or WREN_LOCALHOST__STORAGE_ROOT) "
                    "to a folder of your own")
        self._root_checked = True

    def _path(self, bucket: str, key: str) -> str:
        if not isinstance(key, str) or not key:
            raise StorageError(f"invalid key {key!r}: keys are non-empty strings")
        parts = key.split("/")
        if (
            key.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or "\x00" in key
            or any(p.startswith(TMP_PREFIX) for p in parts)
        ):
            raise StorageError(
                f"invalid key {key!r} for local storage: no leading '/', no empty, '.' or '..' parts"
            )
        return os.path.join(self._bucket_dir(bucket), *parts)

    def _check_folders(self, bucket: str, directory: str) -> None:
        """Refuse ``directory`` (of a checked bucket name) when a folder on its way below the
        bucket's folder is a symbolic link."""
        if self.follow_links:
            return
        bucket_dir = os.path.join(self.root, bucket)
        rel = os.path.relpath(directory, bucket_dir)
        if rel == "." or rel.startswith(".."):
            return
        folder = bucket_dir
        for part in rel.split(os.sep):
            folder = os.path.join(folder, part)
            try:
                st = os.lstat(folder)
            except (FileNotFoundError, NotADirectoryError):
                return  # not there (yet): created as a real folder
            if stat.S_ISLNK(st.st_mode):
                raise StorageInvalidObjectError(
                    f"{os.path.relpath(folder, bucket_dir)!r} in bucket {bucket!r} is a symbolic link "
                    f"(at {folder}): local storage follows none, so that nothing outside it is read, "
                    "written or deleted; remove the link")

    def _require_bucket(self, bucket: str) -> str:
        path = self._bucket_dir(bucket)
        if not os.path.isdir(path):
            raise StorageNoSuchBucketError(
                f"bucket {bucket!r} does not exist in local storage at {self.root}; "
                "create it with create_bucket() or put an object into it"
            )
        return path

    # -- objects --------------------------------------------------------------------------------
    def put_object(self, bucket: str, key: str, body: bytes | IO[bytes]) -> None:
        path = self._path(bucket, key)
        directory = os.path.dirname(path)
        self._check_folders(bucket, directory)
        try:
            _makedirs_private(directory)
            if not self._root_checked:
                self._check_root()
        except (FileExistsError, NotADirectoryError):
            raise StorageError(
                f"cannot store {key!r} in bucket {bucket!r}: a part of its path is an object"
            ) from None
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                if isinstance(body, (bytes, bytearray, memoryview)):
                    f.write(body)
                else:
                    shutil.copyfileobj(body, f, 1024 * 1024)
            os.replace(tmp, path)
        except IsADirectoryError:
            os.unlink(tmp)
            raise StorageError(
                f"cannot store {key!r} in bucket {bucket!r}: keys under it exist already"
            ) from None
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def _open(self, bucket: str, key: str) -> IO[bytes]:
        path = self._path(bucket, key)
        self._check_folders(bucket, os.path.dirname(path))
        try:
            # non-blocking and no symlinks followed: a named pipe or device planted in the
            # storage folder must not hang or redirect a reader
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self._require_bucket(bucket)
            raise StorageNoSuchKeyError(f"no object {key!r} in bucket {bucket!r}") from None
        except OSError as exc:  # a symlink (ELOOP) or no permission
            raise StorageInvalidObjectError(f"object {key!r} in bucket {bucket!r} cannot be read: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StorageInvalidObjectError(f"object {key!r} in bucket {bucket!r} is not a regular file; refusing to read it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def get_object(self, bucket: str, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        with self._open(bucket, key) as f:
            if byte_range is None:
                return f.read()
            first, last = byte_range
            f.seek(first)
            return f.read(max(0, last - first + 1))

    def open_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> IO[bytes]:
        f = self._open(bucket, key)
        if byte_range is None:
            return f
        return io.BufferedReader(RangeReader(f, byte_range[0], byte_range[1]))

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        path = self._path(bucket, key)
        self._check_folders(bucket, os.path.dirname(path))
        try:
            st = os.stat(path) if self.follow_links else os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            self._require_bucket(bucket)
            raise StorageNoSuchKeyError(f"no object {key!r} in bucket {bucket!r}") from None
        if not stat.S_ISREG(st.st_mode):
            raise StorageNoSuchKeyError(f"no object {key!r} in bucket {bucket!r}")
        return ObjectInfo(key=key, size=st.st_size, last_modified=st.st_mtime)

    def delete_objects(self, bucket: str, keys: Iterable[str]) -> None:
        bucket_dir = self._require_bucket(bucket)
        dirs = set()
        for key in keys:
            path = self._path(bucket, key)
            try:
                self._check_folders(bucket, os.path.dirname(path))
            except StorageInvalidObjectError:
                continue  # nothing is deleted through a link (the link itself is an object)
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            dirs.add(os.path.dirname(path))
        # prune folders left empty, deepest first, never the bucket itself
        for d in sorted(dirs, key=len, reverse=True):
            while d != bucket_dir and d.startswith(bucket_dir + os.sep):
                try:
                    os.rmdir(d)
                except OSError:
                    break
                d = os.path.dirname(d)

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        bucket_dir = self._require_bucket(bucket)
        head, _, tail = prefix.rpartition("/")
        start = os.path.join(bucket_dir, *head.split("/")) if head else bucket_dir
        base = head + "/" if head else ""
        found: list[ObjectInfo] = []
        try:
            self._check_folders(bucket, start)
        except StorageInvalidObjectError:
            return  # the prefix is reached through a link: nothing of storage is there
        self._walk(start, base, tail, found)
        found.sort(key=lambda o: o.key)
        yield from found

    def _walk(self, directory: str, base: str, name_prefix: str, out: list[ObjectInfo]) -> None:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if name_prefix and not entry.name.startswith(name_prefix):
                continue
            if entry.name.startswith(TMP_PREFIX):
                continue
            if entry.is_dir(follow_symlinks=False):
                self._walk(entry.path, base + entry.name + "/", "", out)
            else:
                try:
                    st = entry.stat(follow_symlinks=self.follow_links)
                except FileNotFoundError:  # deleted while we listed
                    continue
                out.append(ObjectInfo(key=base + entry.name, size=st.st_size, last_modified=st.st_mtime))

    # -- buckets --------------------------------------------------------------------------------
    def bucket_exists(self, bucket: str) -> bool:
        return os.path.isdir(self._bucket_dir(bucket))

    def create_bucket(self, bucket: str) -> None:
        _makedirs_private(self._bucket_dir(bucket))


@functools.lru_cache(maxsize=4)
def files_storage(root: str = "/") -> LocalStorage:
    """The files of this machine as a storage: the first folder of a path is its bucket (your own
    files: symbolic links are followed)."""
    return LocalStorage(LocalhostConfig(storage_root=root), follow_links=True)


def split_local_path(text: str) -> tuple[str, str, bool]:
    """``(bucket, key, is_folder)`` of an absolute local path in :func:`files_storage`."""
    path = os.path.abspath(os.path.expanduser(text))
    bucket, _, key = path.lstrip("/").partition("/")
    if not key or not os.path.exists(path):
        raise InvalidInputError(
            f"{text!r}: no such file or folder on this machine (give an absolute path to a file or folder "
            "below the top-level folder)"
        )
    if os.path.isdir(path):
        return bucket, key.rstrip("/") + "/", True
    return bucket, key, False
