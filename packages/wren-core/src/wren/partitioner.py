"""Data partitioning: functions with an ``obj`` parameter read stored objects in chunks.

On the client, :func:`partition` turns ``iterdata`` into one call per chunk, deciding
everything before anything is invoked::

    fexec.map(count, "cos://bucket/texts/", chunk_size=64 * 2**20)   # every object under a prefix
    fexec.map(count, "cos://bucket")                                   # every object of a bucket
    fexec.map(count, ["cos://bucket/a.txt", "wren-data/b.txt"])       # keys ('bucket/key': own storage)
    fexec.map(count, ["https://host/data.csv"], chunk_n=4)           # URLs (split if ranges work)
    fexec.map(f, [("cos://b/k", 3), {"obj": "cos://b/k2", "x": 4}])  # other parameters too

The scheme (``cos://``, ``file://``...) picks the storage plugin whose ``schemes`` has it; a
plain ``bucket/key`` means the executor's own storage. ``chunk_size`` (bytes) or ``chunk_n``
(chunks per object) split each object by byte range; without them each object is one call.

On the worker, :func:`make_obj` gives the function an object with ``bucket``, ``key`` (or
``url``), ``part``, ``data_byte_range``, ``size``, ``chunk_size`` and ``data_stream``: a
file-like reading only that chunk, streaming. Text stays whole: a chunk yields exactly the lines
that *start* inside its byte range (reading past its end to finish the last one), so every line
of an object is seen by exactly one chunk, whatever the chunk size.
"""
from __future__ import annotations

import concurrent.futures
import io
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any
from collections.abc import Callable, Iterator

from wren import job as jobmod
from wren.errors import InvalidInputError, StorageNoSuchBucketError, StorageNoSuchKeyError
from wren.records import Job

URL_SCHEMES = ("http", "https")
READ_BLOCK = 256 * 1024
#: First read past a chunk's end to finish its last line; doubles while the line goes on.
OVERRUN_WINDOW = 64 * 1024
HTTP_TIMEOUT = 60.0


# -- the client side ------------------------------------------------------------------------------

def _check_chunking(chunk_size: Any, chunk_n: Any) -> None:
    if chunk_size is not None and chunk_n is not None:
        raise InvalidInputError(
            "give chunk_size (bytes per chunk) or chunk_n (chunks per object), not both"
        )
    for name, value in (("chunk_size", chunk_size), ("chunk_n", chunk_n)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            what = "a number of bytes" if name == "chunk_size" else "a number of chunks per object"
            raise InvalidInputError(f"{name} must be a positive whole number ({what}), got {value!r}")


def plan_ranges(size: int, chunk_size: int | None = None, chunk_n: int | None = None) -> list[tuple[int, int] | None]:
    """Inclusive byte ranges covering ``size`` bytes (``[None]`` for an empty object)."""
    if size <= 0:
        return [None]
    if chunk_n is not None:
        chunk_size = -(-size // chunk_n)
    if chunk_size is None or chunk_size >= size:
        return [(0, size - 1)]
    return [(first, min(size, first + chunk_size) - 1) for first in range(0, size, chunk_size)]


class _Ref:
    """One parsed object reference of iterdata."""

    def __init__(self, text: str, kind: str, storage: Any = None, bucket: str = "", key: str = "", url: str = "",
                 root: str | None = None):
        self.root = root  # a local path: storage is the filesystem from this root
        self.text = text
        self.kind = kind  # "bucket", "prefix", "key" or "url"
        self.storage = storage
        self.bucket = bucket
        self.key = key
        self.url = url


class _Resolver:
    """Turns reference strings into storages; builds each foreign storage once."""

    def __init__(self, executor: Any):
        self.executor = executor
        self.own = executor.storage_backend
        self._built: dict[str, Any] = {}

    def storage_for_scheme(self, scheme: str, text: str) -> Any:
        scheme = "cos" if scheme == "s3" else scheme  # S3-compatible storage: the cos:// plugin
        if scheme in getattr(self.own, "schemes", ()) or scheme == self.own.name:
            return self.own
        from wren.plugins import get_registry

        registry = get_registry()
        owners: dict[str, str] = {}
        for name, claims in registry.provided("storage").items():
            owners[name] = name  # a storage's name is a scheme too (ibm_cos://, localhost://)
            for claim in claims:
                for s in getattr(claim.spec.backend_class, "schemes", ()):
                    owners.setdefault(s, name)
        if scheme not in owners:
            known = sorted(set(owners) | set(URL_SCHEMES))
            hint = ""
            if scheme == "cos":
                hint = " (pip install wren-storage-cos for cos://)"
            raise InvalidInputError(
                f"{text!r}: unknown scheme {scheme + '://'!r}{hint}; use one of "
                f"{', '.join(s + '://' for s in known)}, or 'bucket/key' for the executor's own storage"
            )
        name = owners[scheme]
        if name == self.own.name:
            return self.own
        if name not in self._built:
            from wren.storage.client import build_storage

            self._built[name] = build_storage(self.executor.config, name)
        return self._built[name]

    def local_path(self, text: str) -> _Ref:
        """A file or folder of this machine (the localhost backend's workers share it)."""
        from wren.storage.local import files_storage, split_local_path

        bucket, key, folder = split_local_path(text)
        return _Ref(text, "prefix" if folder else "key", files_storage("/"), bucket, key, root="/")

    def parse(self, text: Any) -> _Ref:
        if not isinstance(text, str):
            raise InvalidInputError(
                f"an object reference must be a string like 'cos://bucket/key', 'bucket/key' or "
                f"'https://host/file', got {type(text).__name__} {text!r}"
            )
        if "://" in text:
            parsed = urllib.parse.urlsplit(text)
            scheme = (parsed.scheme or text.split("://", 1)[0]).lower()  # urlsplit refuses '_' (ibm_cos://)
            if not scheme or not parsed.netloc and scheme in URL_SCHEMES:
                raise InvalidInputError(f"{text!r} is not a valid URL: write 'https://host/path'")
            if scheme in URL_SCHEMES:
                return _Ref(text, "url", url=text)
            storage = self.storage_for_scheme(scheme, text)
            rest = text.split("://", 1)[1]
        elif text.startswith(("/", "~")) and self.executor.config.wren.backend == "localhost":
            return self.local_path(text)
        else:
            storage = self.own
            rest = text
            if "/" not in rest.strip("/"):
                if not rest.strip("/"):
                    raise InvalidInputError(f"empty object reference {text!r}: write 'bucket/key'")
                raise InvalidInputError(
                    f"{text!r} names no object: write 'bucket/key' for one object, 'bucket/prefix/' "
                    f"for every object under a prefix, or '{_scheme_of(self.own)}://{rest.strip('/')}' "
                    "for a whole bucket"
                )
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise InvalidInputError(
                f"{text!r} has no bucket: write '<scheme>://bucket/key' (the bucket comes first)"
            )
        if not key:
            return _Ref(text, "bucket", storage, bucket)
        if key.endswith("/"):
            return _Ref(text, "prefix", storage, bucket, key)
        return _Ref(text, "key", storage, bucket, key)


def _scheme_of(storage: Any) -> str:
    schemes = getattr(storage, "schemes", ())
    return schemes[0] if schemes else "cos"


def _split_reference(item: Any, where: str) -> tuple[Any, tuple, dict]:
    """(reference, other positional args, other keyword args) of one iterdata item."""
    if isinstance(item, str):
        return item, (), {}
    if isinstance(item, tuple):
        if not item:
            raise InvalidInputError(f"{where} is an empty tuple; its first element must be the object reference")
        return item[0], item[1:], {}
    if isinstance(item, dict):
        key = "url" if "url" in item and "obj" not in item else "obj"  # PyWren 1.x's url
        if key not in item:
            raise InvalidInputError(
                f"{where} is a dict without an 'obj' key; give the object reference as "
                "{'obj': 'cos://bucket/key', ...other parameters}"
            )
        _, kwargs = jobmod.split_item(item)
        ref = kwargs.pop(key)
        return ref, (), kwargs
    raise InvalidInputError(
        f"{where} must be an object reference ('cos://bucket/key', 'bucket/key', 'https://...'), "
        f"a tuple whose first element is one, or a dict with an 'obj' key; got {type(item).__name__} {item!r}"
    )


def _positional_to_keywords(func: Callable[..., Any] | None, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Bind the other elements of a tuple item to the function's parameters other than the
    reserved ones (``obj`` is filled by the worker, so position 0 may be taken by it)."""
    if not args or func is None:
        return args, kwargs
    import inspect

    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return args, kwargs
    names = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL,):
            return args, kwargs  # *args takes them as they are
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in jobmod.RESERVED:
            if p.kind is p.KEYWORD_ONLY:
                continue
            names.append(p.name)
    if len(args) > len(names):
        return args, kwargs  # the binder on the executor reports the mismatch
    bound = dict(zip(names, args, strict=False))
    dup = set(bound) & set(kwargs)
    if dup:
        raise InvalidInputError(f"the parameter(s) {sorted(dup)} are given twice (in the item and in extra_args)")
    return (), {**bound, **kwargs}


def _url_info(url: str) -> tuple[int | None, bool]:
    """(size, accepts byte ranges) from a HEAD request."""
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            length = resp.headers.get("Content-Length")
            ranges = (resp.headers.get("Accept-Ranges") or "").lower().strip() == "bytes"
    except urllib.error.HTTPError as exc:
        raise InvalidInputError(f"{url!r}: HEAD answered {exc.code} {exc.reason}; check the URL") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InvalidInputError(f"{url!r} cannot be reached from the client: {reason}") from None
    size = int(length) if length is not None and length.strip().isdigit() else None
    return size, ranges


def partition(
    executor: Any,
    iterdata: Any,
    extra_args: Any,
    chunk_size: int | None,
    chunk_n: int | None,
    func: Callable[..., Any] | None = None,
    newline: str | None = "\n",
) -> tuple[list[tuple[tuple, dict]], list[dict[str, Any]], list[list[int]]]:
    """Plan one call per chunk of every object named by ``iterdata``.

    Returns ``(arguments, objs, groups)``: each call's (args, kwargs) without ``obj``, each
    call's partition record (small, picklable; :func:`make_obj` turns it into the ``obj``
    argument on the worker) and, per object, the indices of its calls. ``func`` (optional) lets
    the other elements of tuple items bind to its parameters by name. ``newline=None`` gives
    chunks of exactly their byte range (no line integrity).
    """
    _check_chunking(chunk_size, chunk_n)
    if isinstance(iterdata, str):
        iterdata = [iterdata]
    items = jobmod.normalize_iterdata(iterdata)
    if not items:
        return [], [], []
    resolver = _Resolver(executor)

    # 1. parse every item (no I/O yet but plugin lookup)
    parsed: list[tuple[_Ref, tuple, dict]] = []
    for i, item in enumerate(items):
        ref_text, args, kwargs = _split_reference(item, f"iterdata item {i}")
        ref = resolver.parse(ref_text)
        args, kwargs = jobmod.add_extra_args(args, kwargs, extra_args)
        args, kwargs = _positional_to_keywords(func, args, kwargs)
        parsed.append((ref, args, kwargs))

    # 2. find the objects: one listing per bucket/prefix, HEAD for keys and URLs, in parallel
    listings: dict[tuple[int, str, str], Any] = {}
    heads: dict[tuple[int, str, str], Any] = {}
    urls: dict[str, Any] = {}
    storages: dict[int, Any] = {}
    for ref, _, _ in parsed:
        if ref.kind == "url":
            urls[ref.url] = None
            continue
        storages[id(ref.storage)] = ref.storage
        key = (id(ref.storage), ref.bucket, ref.key)
        (heads if ref.kind == "key" else listings)[key] = None

    def do_list(k: tuple[int, str, str]) -> Any:
        storage = storages[k[0]]
        try:
            found = [o for o in storage.list_objects(k[1], k[2]) if not o.key.endswith("/")]
        except StorageNoSuchBucketError:
            raise InvalidInputError(
                f"bucket {k[1]!r} does not exist in storage {storage.name!r}; check the name"
            ) from None
        return found

    def do_head(k: tuple[int, str, str]) -> Any:
        storage = storages[k[0]]
        try:
            return storage.head_object(k[1], k[2])
        except StorageNoSuchBucketError:
            raise InvalidInputError(
                f"bucket {k[1]!r} does not exist in storage {storage.name!r}; check the name"
            ) from None
        except StorageNoSuchKeyError:
            raise InvalidInputError(
                f"no object {k[2]!r} in bucket {k[1]!r} ({storage.name}); check the key, or end it "
                "with '/' to take every object under that prefix"
            ) from None

    jobs: list[tuple[dict, Any, Callable[[Any], Any]]] = (
        [(listings, k, do_list) for k in listings]
        + [(heads, k, do_head) for k in heads]
        + [(urls, u, _url_info) for u in urls]
    )
    if len(jobs) == 1:
        target, k, fn = jobs[0]
        target[k] = fn(k)
    elif jobs:
        with concurrent.futures.ThreadPoolExecutor(min(32, len(jobs))) as pool:
            futs = [(target, k, pool.submit(fn, k)) for target, k, fn in jobs]
            for target, k, fut in futs:
                target[k] = fut.result()

    # 3. one call per chunk
    arguments: list[tuple[tuple, dict]] = []
    objs: list[dict[str, Any]] = []
    groups: list[list[int]] = []

    def add_object(base: dict[str, Any], size: int | None, splittable: bool, args: tuple, kwargs: dict) -> None:
        if size is None or not splittable:
            ranges: list[tuple[int, int] | None] = [None]
        else:
            ranges = plan_ranges(size, chunk_size, chunk_n)
        group = []
        for part, rng in enumerate(ranges):
            group.append(len(objs))
            chunk = None if rng is None else rng[1] - rng[0] + 1
            objs.append({**base, "part": part, "parts": len(ranges), "data_byte_range": rng,
                         "size": size, "chunk_size": chunk, "exact": newline is None})
            arguments.append((args, dict(kwargs)))
        groups.append(group)

    for ref, args, kwargs in parsed:
        if ref.kind == "url":
            size, accepts = urls[ref.url]
            add_object({"storage": None, "bucket": None, "key": None, "url": ref.url}, size, accepts, args, kwargs)
            continue
        base = {"storage": ref.storage.name, "bucket": ref.bucket, "url": None, "root": ref.root}
        k = (id(ref.storage), ref.bucket, ref.key)
        if ref.kind == "key":
            info = heads[k]
            add_object({**base, "key": ref.key}, info.size, True, args, kwargs)
            continue
        found = listings[k]
        if not found:
            where = "bucket" if ref.kind == "bucket" else "prefix"
            raise InvalidInputError(
                f"{ref.text!r}: no objects in that {where}; check the name (prefixes end with '/')"
            )
        for info in found:
            add_object({**base, "key": info.key}, info.size, True, args, kwargs)
    return arguments, objs, groups


# -- the worker side ------------------------------------------------------------------------------

def line_chunks(
    open_range: Callable[[int, int], IO[bytes]],
    first: int,
    last: int,
    size: int,
    block: int = READ_BLOCK,
    window: int = OVERRUN_WINDOW,
) -> Iterator[bytes]:
    """Yield the bytes of the lines that start in ``first..last`` (inclusive) of an object of
    ``size`` bytes. ``open_range(a, b)`` opens bytes a..b (inclusive) as a stream.

    A line starts at 0 or right after a ``\\n``. The chunk skips its first partial line (it
    belongs to the chunk where it starts) and reads past ``last`` to finish its own last line,
    in windows that double while the line goes on.
    """
    if size <= 0 or first > last or first >= size:
        return
    last = min(last, size - 1)
    start = first - 1 if first > 0 else 0  # one byte before: was it the end of a line?
    ends_with_newline = False
    with open_range(start, last) as f:
        if first > 0:
            before = f.read(1)
            if before != b"\n":
                # skip the rest of a line that started in an earlier chunk
                while True:
                    data = f.read(block)
                    if not data:
                        return  # no line starts here: that line goes on past our end
                    nl = data.find(b"\n")
                    if nl >= 0:
                        rest = data[nl + 1:]
                        if rest:
                            ends_with_newline = rest.endswith(b"\n")
                            yield rest
                        else:
                            ends_with_newline = True
                        break
        while True:
            data = f.read(block)
            if not data:
                break
            ends_with_newline = data.endswith(b"\n")
            yield data
    if ends_with_newline or last >= size - 1:
        return
    pos = last + 1
    while pos < size:
        end = min(size - 1, pos + window - 1)
        with open_range(pos, end) as f:
            while True:
                data = f.read(block)
                if not data:
                    break
                nl = data.find(b"\n")
                if nl >= 0:
                    yield data[: nl + 1]
                    return
                yield data
        pos = end + 1
        window *= 2


class _IterStream(io.RawIOBase):
    """A raw stream over an iterator of byte blocks (pulled only as the reader asks)."""

    def __init__(self, blocks: Iterator[bytes]):
        self._blocks = blocks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not len(self._pending):
            try:
                self._pending = memoryview(next(self._blocks))
            except StopIteration:
                return 0
        n = min(len(b), len(self._pending))
        memoryview(b)[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            close = getattr(self._blocks, "close", None)
            if close is not None:
                close()
        super().close()


def chunk_stream(open_range: Callable[[int, int], IO[bytes]], first: int, last: int, size: int) -> IO[bytes]:
    """A buffered file-like over :func:`line_chunks` (read, readline, iteration by line)."""
    return io.BufferedReader(_IterStream(line_chunks(open_range, first, last, size)), READ_BLOCK)  # type: ignore[arg-type]


class _URLRange(io.RawIOBase):
    """Bytes a..b of a URL (a server that ignores the Range header is read and skipped)."""

    def __init__(self, url: str, first: int | None = None, last: int | None = None):
        headers = {}
        if first is not None and last is not None:
            headers["Range"] = f"bytes={first}-{last}"
        req = urllib.request.Request(url, headers=headers)
        try:
            self._resp = urllib.request.urlopen(req, timeout=HTTP_TIMEOUT)
        except urllib.error.HTTPError as exc:
            if exc.code == 416:
                self._resp = None
                self._left = 0
                return
            from wren.errors import StorageError

            raise StorageError(f"GET {url} answered {exc.code} {exc.reason}") from None
        self._left = -1 if first is None or last is None else last - first + 1
        if first and self._resp.status == 200:  # the range was ignored: skip to it
            skip = first
            while skip > 0:
                data = self._resp.read(min(skip, READ_BLOCK))
                if not data:
                    break
                skip -= len(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._resp is None or self._left == 0:
            return 0
        want = len(b) if self._left < 0 else min(len(b), self._left)
        data = self._resp.read(want)
        memoryview(b)[: len(data)] = data
        if self._left > 0:
            self._left -= len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed and self._resp is not None:
            self._resp.close()
        super().close()


class PartitionedObject:
    """The ``obj`` argument: one chunk of one object (or URL)."""

    def __init__(self, spec: dict[str, Any], opener: Callable[[int, int], IO[bytes]], whole: Callable[[], IO[bytes]]):
        self.storage_name: str | None = spec.get("storage")
        self.bucket: str | None = spec.get("bucket")
        self.key: str | None = spec.get("key")
        self.url: str | None = spec.get("url")
        self.part: int = spec.get("part", 0)
        self.parts: int = spec.get("parts", 1)
        self.data_byte_range: tuple[int, int] | None = spec.get("data_byte_range")
        self.size: int | None = spec.get("size")
        self.chunk_size: int | None = spec.get("chunk_size")
        self._exact: bool = bool(spec.get("exact"))
        self._root: str | None = spec.get("root")
        self._opener = opener
        self._whole = whole
        self._stream: IO[bytes] | None = None

    @property
    def path(self) -> str:
        if self._root:  # a local file: its absolute path
            return os.path.join(self._root, f"{self.bucket}/{self.key}")
        return self.url or f"{self.bucket}/{self.key}"

    @property
    def data_stream(self) -> IO[bytes]:
        """The chunk's lines as a binary file-like object (opened on first use, streaming)."""
        if self._stream is None:
            rng = self.data_byte_range
            if rng is None:
                self._stream = io.BytesIO(b"") if self.size == 0 else self._whole()
            elif self._exact:  # obj_newline=None: exactly the byte range
                self._stream = self._opener(rng[0], rng[1])
            else:
                self._stream = chunk_stream(self._opener, rng[0], rng[1], self.size or 0)
        return self._stream

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def __repr__(self) -> str:
        return (
            f"<wren obj {self.path} part {self.part + 1}/{self.parts} range {self.data_byte_range} "
            f"of {self.size} bytes>"
        )


_storages: dict[str, Any] = {}
_storages_lock = threading.Lock()


def _storage_on_worker(name: str, storage: Any, job: Job) -> Any:
    if storage is not None and getattr(storage, "name", None) == name:
        return storage
    with _storages_lock:
        if name not in _storages:
            from wren.config import load_config
            from wren.storage.client import build_storage

            cfg = load_config(job.config or {}, read_file=False, read_env=False)
            _storages[name] = build_storage(cfg, name)
        return _storages[name]


def make_obj(spec: dict[str, Any], storage: Any, job: Job) -> PartitionedObject:
    """Build the ``obj`` argument from a partition record (on the worker)."""
    if spec.get("url"):
        url = spec["url"]
        return PartitionedObject(
            spec, lambda a, b: io.BufferedReader(_URLRange(url, a, b)), lambda: io.BufferedReader(_URLRange(url))
        )
    if spec.get("root"):  # a local file (localhost backend)
        from wren.storage.local import files_storage

        st = files_storage(spec["root"])
    else:
        st = _storage_on_worker(spec["storage"], storage, job)
    bucket, key = spec["bucket"], spec["key"]
    return PartitionedObject(
        spec, lambda a, b: st.open_object(bucket, key, (a, b)), lambda: st.open_object(bucket, key)
    )
