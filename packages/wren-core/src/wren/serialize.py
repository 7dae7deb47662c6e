"""Serialization: cloudpickle for functions and data, local modules shipped as source, and
signed envelopes so a worker runs only what its client stored.

Local modules: a function defined in ``helpers.py`` next to the user's script pickles *by
reference* (``import helpers`` on the worker), which fails where ``helpers`` is not installed.
:func:`find_local_modules` follows the function's globals, closures and defaults, and then the
``import`` statements of each local module found, and collects every module that is neither in
the standard library nor provided by an installed distribution (or, for a container runtime,
not among the modules the runtime reports). Their sources travel zipped with the function; the
worker unpacks them once and puts them first on ``sys.path``.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import io
import os
import pickle
import site
import sys
import types
from typing import Any
from collections.abc import Iterable

import cloudpickle

from wren.errors import SerializationError

MAGIC = b"WREN1"
_TAG = 32  # HMAC-SHA256 length


# -- signed envelopes ---------------------------------------------------------------------------

def _tag(secret: bytes, place: str, payload: bytes | memoryview) -> bytes:
    mac = hmac.new(secret, place.encode() + b"\0", hashlib.sha256)
    mac.update(payload)
    return mac.digest()


def sign(secret: bytes, payload: bytes, place: str) -> bytes:
    """Prefix ``payload`` with a magic marker and its HMAC-SHA256 under ``secret``, bound to
    ``place``: where the object belongs (its storage key, or the key and call of a data
    range). A validly signed object copied to another place does not verify there."""
    return signature(secret, payload, place) + payload


def signature(secret: bytes, payload: bytes | memoryview, place: str) -> bytes:
    """What :func:`sign` puts before ``payload`` (so a large payload need not be copied)."""
    return MAGIC + _tag(secret, place, payload)


def derive_secret(root_id: str, root_secret: bytes, executor_id: str) -> bytes | None:
    """Key of executor ``executor_id`` nested under root executor ``root_id``: an HMAC chain
    from the root's key over the nested id's parts (``None`` when it is not nested there)."""
    if executor_id == root_id:
        return root_secret
    if not executor_id.startswith(root_id + "."):
        return None
    secret = root_secret
    for part in executor_id[len(root_id) + 1:].split("."):
        secret = hmac.new(secret, part.encode(), hashlib.sha256).digest()
    return secret


#: The largest status record a client or reducer reads (inline results, logs and tracebacks
#: are far smaller): a planted huge object is refused without being read whole.
MAX_STATUS_BYTES = 64 * 1024 * 1024


def signed_size(payload_len: int) -> int:
    """Length of the signed envelope of a payload of ``payload_len`` bytes."""
    return len(MAGIC) + _TAG + payload_len


def read_signed(storage: Any, bucket: str, key: str, what: str, size: int | None = None,
                limit: int = MAX_STATUS_BYTES) -> bytes:
    """Read a signed object without trusting its length: exactly ``size`` payload bytes when
    the (verified) record that names it says how many, else at most ``limit``. One byte more is
    asked for, so a longer object is refused, not read whole."""
    want = signed_size(size) if isinstance(size, int) and size >= 0 else limit
    blob = storage.get_object(bucket, key, (0, want))
    if len(blob) > want or (isinstance(size, int) and len(blob) != want):
        raise SerializationError(
            f"refusing {what} at {key}: it is {'larger' if len(blob) > want else 'smaller'} than "
            f"{'its call recorded' if isinstance(size, int) else f'the {limit} bytes such objects may have'}, "
            "so it was replaced in storage"
        )
    return blob


def verify(secret: bytes, blob: bytes, what: str, place: str) -> memoryview:
    """Return the payload of a signed envelope (a view: no copy), or raise if the signature
    does not match this key and this place."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _TAG:
        raise SerializationError(
            f"refusing {what}: it is not a signed wren object (it may have been replaced in storage)"
        )
    view = memoryview(blob)
    tag = view[len(MAGIC): len(MAGIC) + _TAG]
    payload = view[len(MAGIC) + _TAG:]
    if not hmac.compare_digest(tag, _tag(secret, place, payload)):
        raise SerializationError(
            f"refusing {what} at {place}: its signature does not match this job's key and this "
            "place, so it was changed, or copied from another place, after the client stored it"
        )
    return payload


# -- values ------------------------------------------------------------------------------------

def dumps(obj: Any, what: str) -> bytes:
    try:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise pickling_error(exc, what) from exc


def pickling_error(exc: BaseException, what: str) -> SerializationError:
    """The error for ``what`` that failed to pickle with ``exc``: what to do about it."""
    return SerializationError(
        f"cannot pickle {what}: {type(exc).__name__}: {exc}. Pass picklable values "
        "(open files, locks, sockets and generators are not): create such objects inside "
        "the function instead"
    )


class Dumper:
    """:func:`dumps` for many values in turn with one pickler: a new cloudpickle pickler costs
    more than pickling a small value (cloudpickle supports many dumps on one pickler; each
    starts here with an empty memo, as a new pickler would)."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._pickler: Any = None

    def dumps(self, obj: Any, what: str) -> bytes:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        pickler = self._pickler
        if pickler is None:
            pickler = self._pickler = cloudpickle.CloudPickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            pickler.clear_memo()
            pickler.globals_ref = {}  # what functions of one value share
        try:
            pickler.dump(obj)
        except Exception as exc:
            self._pickler = None  # a fresh one after a failure
            raise pickling_error(exc, what) from exc
        return buf.getvalue()


def loads(data: bytes | bytearray | memoryview, what: str) -> Any:
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise loading_error(exc, what) from exc


def loading_error(exc: BaseException, what: str) -> SerializationError:
    """The error for ``what`` that failed to unpickle with ``exc``: what to do about it."""
    if isinstance(exc, ModuleNotFoundError):
        err = SerializationError(
            f"cannot unpickle {what}: {exc}. Install that module in the runtime, or ship it "
            f"with include_modules=[{exc.name!r}] if it is your own code"
        )
    else:
        err = SerializationError(f"cannot unpickle {what}: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


# -- local modules ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _system_dirs() -> tuple[str, ...]:
    import sysconfig  # here, as ast and zipfile below: a worker never needs them

    dirs = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            dirs.add(os.path.realpath(p))
    try:
        dirs.update(os.path.realpath(p) for p in site.getsitepackages())
    except AttributeError:
        pass
    user = getattr(site, "getusersitepackages", lambda: None)()
    if user:
        dirs.add(os.path.realpath(user))
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        dirs.add(os.path.realpath(os.path.join(prefix, "lib")))
    return tuple(sorted(dirs))


@functools.lru_cache(maxsize=1)
def installed_top_level() -> frozenset[str]:
    """Top-level import names that installed distributions provide (editable ones included)."""
    names = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    import importlib.metadata  # here: its import costs every process 13 ms

    try:
        names.update(importlib.metadata.packages_distributions())
    except Exception:
        pass
    return frozenset(names)


@functools.lru_cache(maxsize=1)
def _pth_dirs() -> tuple[str, ...]:
    """Folders that ``.pth`` files in site-packages add to ``sys.path`` (editable installs):
    every interpreter of this environment sees them, so they count as installed."""
    dirs = set()
    site_dirs = list(getattr(site, "getsitepackages", lambda: [])())
    user = getattr(site, "getusersitepackages", lambda: None)()
    if user:
        site_dirs.append(user)
    for sd in site_dirs:
        try:
            names = [n for n in os.listdir(sd) if n.endswith(".pth")]
        except OSError:
            continue
        for n in names:
            try:
                lines = open(os.path.join(sd, n), encoding="utf-8").read().splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if line and not line.startswith(("#", "import ", "import\t")):
                    path = line if os.path.isabs(line) else os.path.join(sd, line)
                    if os.path.isdir(path):
                        dirs.add(os.path.realpath(path))
    return tuple(sorted(dirs))


NEVER_SHIPPED = frozenset({"wren", "cloudpickle", "tblib"})


def _is_local(module: types.ModuleType, available: frozenset[str] | None) -> bool:
    """Whether ``module`` must travel with the function: ``available`` is what the runtime
    said it has, ``None`` for this very environment."""
    name = getattr(module, "__name__", "")
    if not name or name == "__main__":
        return False
    top = name.split(".")[0]
    if top in NEVER_SHIPPED or top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return False
    if available is not None and top in available:
        return False
    path = getattr(module, "__file__", None)
    if not path:
        return False
    if available is not None:
        # the runtime said what it has: ship what it lacks, if it is plain Python source
        return _shippable(top)
    real = os.path.realpath(path)
    if any(real.startswith(d + os.sep) for d in _pth_dirs()):
        return False
    if any(real.startswith(d + os.sep) for d in _system_dirs()):
        return False
    # outside every installation folder: local unless a distribution provides it (asked last:
    # listing the installed distributions costs about 0.2 s, once per process)
    return top not in installed_top_level()


MAX_SHIPPED_BYTES = 20 * 1024 * 1024


@functools.lru_cache(maxsize=256)
def _shippable(top: str) -> bool:
    """A top-level module the runtime lacks can travel with the function when it is pure
    Python and not huge; a compiled one must be installed in the runtime instead."""
    import logging

    mod = sys.modules.get(top)
    path = getattr(mod, "__file__", None)
    if not path:
        return False
    if not hasattr(mod, "__path__"):
        return path.endswith(".py")
    total = 0
    for dirpath, _, filenames in os.walk(os.path.dirname(path)):
        for fn in filenames:
            if fn.endswith((".so", ".pyd", ".dylib")):
                logging.getLogger("wren.serialize").warning(
                    "the runtime lacks %r, a compiled package wren cannot ship: add it to the runtime", top
                )
                return False
            try:
                total += os.path.getsize(os.path.join(dirpath, fn))
            except OSError:
                pass
    if total > MAX_SHIPPED_BYTES:
        logging.getLogger("wren.serialize").warning(
            "the runtime lacks %r (%d MB): too large to ship with every function; add it to the runtime",
            top, total // (1024 * 1024),
        )
        return False
    return True


def _modules_in(obj: Any, seen: set[int], out: set[str]) -> None:
    """Names of modules that ``obj`` (a function, class, partial, method...) refers to."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, types.ModuleType):
        out.add(obj.__name__)
        return
    wrapped = getattr(obj, "wren_wrapped", None)  # wren's wrappers (the map_reduce reducer)
    if wrapped is not None and not isinstance(obj, type):
        _modules_in(wrapped, seen, out)
    if isinstance(obj, functools.partial):
        _modules_in(obj.func, seen, out)
        for a in list(obj.args) + list((obj.keywords or {}).values()):
            _modules_in(a, seen, out)
        return
    if isinstance(obj, types.MethodType):
        _modules_in(obj.__func__, seen, out)
        _modules_in(type(obj.__self__), seen, out)
        return
    if isinstance(obj, types.FunctionType):
        mod = obj.__module__
        if mod and mod != "__main__":
            out.add(mod)
            return  # pickled by reference: importing its module brings the rest
        code_names: set[str] = set()
        stack = [obj.__code__]
        while stack:
            code = stack.pop()
            code_names.update(code.co_names)
            stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
        g = obj.__globals__
        for name in code_names:
            if name in g:
                _modules_in(g[name], seen, out)
        for cell in obj.__closure__ or ():
            try:
                _modules_in(cell.cell_contents, seen, out)
            except ValueError:
                pass
        for d in list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values()):
            _modules_in(d, seen, out)
        return
    if isinstance(obj, type):
        mod = obj.__module__
        if mod and mod not in ("__main__", "builtins"):
            out.add(mod)
        elif mod == "__main__":
            for v in vars(obj).values():
                if isinstance(v, (types.FunctionType, staticmethod, classmethod)):
                    _modules_in(getattr(v, "__func__", v), seen, out)
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _modules_in(v, seen, out)
        return
    if isinstance(obj, dict):
        for v in obj.values():
            _modules_in(v, seen, out)
        return
    cls = type(obj)
    if cls.__module__ not in ("builtins",):
        _modules_in(cls, seen, out)


def _imports_of(module: types.ModuleType) -> set[str]:
    import ast

    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return set()
    try:
        tree = ast.parse(open(path, "rb").read(), filename=path)
    except (OSError, SyntaxError):
        return set()
    names: set[str] = set()
    package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return names


def find_local_modules(
    func: Any,
    extra_objects: Iterable[Any] = (),
    available: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
) -> list[str]:
    """Top-level local modules ``func`` needs that the runtime lacks (sorted names)."""
    avail = None if available is None else frozenset(available) - {"__main__"}
    excluded = set(exclude)
    names: set[str] = set()
    _modules_in(func, set(), names)
    for obj in extra_objects:
        _modules_in(obj, set(), names)
    result: set[str] = set()
    queue = list(names)
    visited: set[str] = set()
    while queue:
        name = queue.pop()
        if name in visited:
            continue
        visited.add(name)
        mod = sys.modules.get(name)
        if mod is None or not _is_local(mod, avail):
            continue
        top = name.split(".")[0]
        if top in excluded or name in excluded:
            continue
        result.add(top)
        queue.extend(n for n in _imports_of(mod) if n in sys.modules)
        top_mod = sys.modules.get(top)
        if top_mod is not None and top_mod is not mod:
            queue.append(top)
    return sorted(result)


def _module_root(name: str) -> tuple[str, str]:
    """(path to ship, archive name) for a top-level module or package."""
    mod = sys.modules.get(name)
    if mod is None:
        try:
            import importlib

            mod = importlib.import_module(name)
        except ImportError as exc:
            raise SerializationError(
                f"include_modules names {name!r}, which cannot be imported here: {exc}"
            ) from None
    path = getattr(mod, "__file__", None)
    if not path:
        raise SerializationError(f"module {name!r} has no source file to ship")
    if hasattr(mod, "__path__"):
        return os.path.dirname(path), name
    return path, os.path.basename(path)


def zip_modules(names: Iterable[str]) -> bytes | None:
    """A zip of the sources of the named top-level modules/packages (``None`` if none)."""
    import zipfile

    names = sorted(set(names))
    if not names:
        return None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            root, arc = _module_root(name)
            if os.path.isdir(root):
                for dirpath, dirnames, filenames in os.walk(root):
                    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                    for fn in sorted(filenames):
                        if fn.endswith((".pyc", ".pyo")):
                            continue
                        full = os.path.join(dirpath, fn)
                        rel = os.path.relpath(full, root)
                        info = zipfile.ZipInfo(os.path.join(arc, rel), date_time=(2000, 1, 1, 0, 0, 0))
                        info.compress_type = zipfile.ZIP_DEFLATED
                        with open(full, "rb") as f:
                            zf.writestr(info, f.read())
            else:
                info = zipfile.ZipInfo(arc, date_time=(2000, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(root, "rb") as f:
                    zf.writestr(info, f.read())
    return buf.getvalue()


def package_function(
    func: Any,
    include_modules: Iterable[str] | None = (),
    exclude_modules: Iterable[str] | None = None,
    runtime_modules: Iterable[str] | None = None,
    extra_objects: Iterable[Any] = (),
) -> tuple[bytes, list[str]]:
    """Pickle ``func`` with the sources of the local modules it needs.

    As in PyWren for IBM Cloud and Lithops: ``include_modules=[]`` (the default) finds them
    automatically (less ``exclude_modules``); ``None`` ships none; a non-empty list ships exactly
    those modules. Returns the package bytes and the names shipped.
    """
    if not callable(func):
        raise SerializationError(
            f"the function to run must be callable, got {type(func).__name__}: {func!r}"
        )
    if isinstance(include_modules, str):
        raise SerializationError("include_modules must be a list of module names, not a string")
    if isinstance(exclude_modules, str):
        raise SerializationError("exclude_modules must be a list of module names, not a string")
    if include_modules is None:
        modules: list[str] = []
    else:
        wanted = list(include_modules)
        if wanted:
            modules = sorted(set(wanted))
        else:
            modules = find_local_modules(func, extra_objects, runtime_modules, exclude_modules or ())
    func_bytes = dumps(func, f"function {getattr(func, '__qualname__', func)!r}")
    package = pickle.dumps(
        {"func": func_bytes, "modules": zip_modules(modules), "module_names": modules,
         "sources": function_sources(func)},
        protocol=pickle.HIGHEST_PROTOCOL,
    )
    return package, modules


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dynamic_functions(func: Any) -> list[types.FunctionType]:
    """The functions pickled by value that ``func`` is or refers to (partials, methods, the
    functions its globals name): those of a notebook cell or of ``__main__``."""
    found: list[types.FunctionType] = []
    seen: set[int] = set()
    todo = [func]
    while todo and len(seen) < 200:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            todo += [obj.func, *obj.args, *(obj.keywords or {}).values()]
        elif isinstance(obj, types.MethodType):
            todo.append(obj.__func__)
        elif isinstance(obj, types.FunctionType) and obj.__module__ in ("__main__", None):
            found.append(obj)
            g = obj.__globals__
            todo += [g[n] for n in obj.__code__.co_names if isinstance(g.get(n), types.FunctionType)]
    return found


def code_id(code: types.CodeType) -> str:
    """A code object's name and first line (cloudpickle drops its file name)."""
    return f"{code.co_name}:{code.co_firstlineno}"


def function_sources(func: Any, limit: int = 256 * 1024) -> dict[str, Any]:
    """Where the functions ``func`` brings by value come from, and the source lines of those
    files when a worker cannot read them (a notebook cell, ``__main__``'s script): sent with
    the function so the call's traceback shows the user's lines. At most ``limit``
    characters of source in all."""
    import linecache

    files: dict[str, list[str]] = {}
    code_files: dict[str, str] = {}
    size = 0
    for f in dynamic_functions(func):
        name = f.__code__.co_filename
        code_files[code_id(f.__code__)] = name
        lines = linecache.getlines(name)
        first, last = _line_span(f.__code__)
        if not lines or size + sum(map(len, lines[first - 1:last])) > limit:
            continue
        # only the function's own lines travel (the rest of the script, and whatever a user
        # keeps there, stays here); blank lines keep the numbering
        kept = files.setdefault(name, ["\n"] * len(lines))
        for i in range(first - 1, min(last, len(lines))):
            if kept[i] != lines[i]:
                kept[i] = lines[i]
                size += len(lines[i])
    return {"files": files, "code_files": code_files}


def _line_span(code: types.CodeType) -> tuple[int, int]:
    """First and last source line of a code object and the code nested in it."""
    first = last = code.co_firstlineno
    todo = [code]
    while todo:
        c = todo.pop()
        last = max([last] + [line for _, _, line in c.co_lines() if line is not None])
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return first, last
