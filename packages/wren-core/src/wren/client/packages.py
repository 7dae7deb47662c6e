"""The packed function of a submission, reused while it provably cannot have changed.

``call_async`` in a loop packs the same function for every call: pickling it by value costs
more than the rest of the submission. cloudpickle captures, at pickling time, the function's
code, defaults, closure and the global values its code names, so a package may be reused only
while none of these can differ. That is only known for a plain function without a closure or
attributes whose defaults, annotations and named globals are all *stable*: modules, builtins,
immutable scalars (and tuples of them), and functions or classes pickled by reference (defined
at the top of an importable module other than ``__main__``), each compared by identity with
what was packed (rebinding a name is seen; such values cannot change in place). Any other
function, or one that ships local modules (their files may change), is packed every time.
"""
from __future__ import annotations

import sys
import types
import weakref
from typing import Any
from collections.abc import Callable, Iterable

_SCALARS = (int, float, complex, str, bytes, bool, type(None))
_MISSING = object()


def _by_reference(obj: Any) -> bool:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "") or ""
    if not module or module == "__main__" or "<" in qualname:
        return False
    target: Any = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target is obj


def _stable(value: Any) -> bool:
    if isinstance(value, (*_SCALARS, types.ModuleType, types.BuiltinFunctionType)):
        return True
    if isinstance(value, tuple):
        return all(isinstance(v, _SCALARS) for v in value)
    if isinstance(value, (types.FunctionType, type)):
        return _by_reference(value)
    return False


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def fingerprint(func: Any) -> tuple[Any, ...] | None:
    """What a package of ``func`` depends on, as objects to compare by identity (``None``:
    ``func`` cannot be shown unchanged)."""
    if type(func) is not types.FunctionType or func.__closure__ or func.__dict__:
        return None
    parts: list[Any] = [func.__code__, func.__defaults__, func.__name__, func.__qualname__, func.__module__,
                        func.__doc__]
    if not all(_stable(v) for v in func.__defaults__ or ()):
        return None
    for mapping in (func.__kwdefaults__ or {}, func.__annotations__):
        for key, value in mapping.items():
            if not _stable(value):
                return None
            parts += [key, value]
    g = func.__globals__
    for name in sorted(_names(func.__code__)):
        value = g.get(name, _MISSING)
        if value is not _MISSING and not _stable(value):
            return None
        parts += [name, value]
    return tuple(parts)


class PackageCache:
    """Packages of the functions an executor submits, kept (weakly) while unchanged."""

    def __init__(self) -> None:
        self._by_func: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], tuple[bytes, list[str]]]] = \
            weakref.WeakKeyDictionary()

    def package(self, func: Any, options: tuple[Any, ...],
                pack: Callable[[], tuple[bytes, list[str]]]) -> tuple[bytes, list[str]]:
        """``pack()``'s result for ``func`` packed with ``options`` (compared by equality),
        reused while :func:`fingerprint` shows nothing it depends on changed."""
        mark = fingerprint(func)
        if mark is None:
            return pack()
        key = (*options, *mark)
        cached = self._by_func.get(func)
        if cached is not None and len(cached[0]) == len(key) and all(
                a is b or (i < len(options) and a == b) for i, (a, b) in enumerate(zip(cached[0], key, strict=True))):
            return cached[1]
        result = pack()
        if not result[1]:  # shipped local modules may change on disk: packed every time
            self._by_func[func] = (key, result)
        return result


def options_key(include: Iterable[str] | None, exclude: Iterable[str] | None) -> tuple[Any, ...]:
    """The packing options, comparable: module lists as tuples."""
    return (None if include is None else tuple(include), None if exclude is None else tuple(exclude))
