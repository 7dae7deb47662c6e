"""Every public function, class, method and property of wren's public API (``wren.__all__``,
``wren.concurrent.Executor``, ``wren.multiprocessing.Pool``) has a docstring, and that
docstring names each of the function's parameters (``__init__``'s in its class docstring)."""
from __future__ import annotations

import inspect
import re
from typing import Any
from collections.abc import Iterator

import wren
import wren.concurrent
import wren.multiprocessing

SKIPPED_PARAMS = {"self", "cls"}


def _public_objects() -> Iterator[tuple[str, Any]]:
    for name in wren.__all__:
        yield f"wren.{name}", getattr(wren, name)
    yield "wren.concurrent.Executor", wren.concurrent.Executor
    yield "wren.multiprocessing.Pool", wren.multiprocessing.Pool


def _params(fn: Any) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values()
            if p.name not in SKIPPED_PARAMS
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    """The class's own public members and those it inherits from wren classes (not from builtins)."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("wren"):
            continue
        for name, value in vars(klass).items():
            if name in seen or (name.startswith("_") and name != "__init__"):
                continue
            seen.add(name)
            yield name, value


def _unwrap(value: Any) -> Any:
    if isinstance(value, (staticmethod, classmethod)):
        return value.__func__
    return value


def _offenders() -> list[str]:
    out: list[str] = []

    def check_function(qualname: str, fn: Any, extra_doc: str = "") -> None:
        doc = inspect.getdoc(fn) or ""
        if not doc.strip() and not extra_doc.strip():
            out.append(f"{qualname}: no docstring")
            return
        text = doc + "\n" + extra_doc
        missing = [p for p in _params(fn) if not re.search(rf"\b{re.escape(p)}\b", text)]
        if missing:
            out.append(f"{qualname}: parameters not documented: {', '.join(missing)}")

    for qualname, obj in _public_objects():
        if inspect.isclass(obj):
            class_doc = obj.__dict__.get("__doc__") or ""
            if not class_doc.strip():
                out.append(f"{qualname}: no class docstring")
            for name, value in _members(obj):
                where = f"{qualname}.{name}"
                if isinstance(value, property):
                    if not (value.__doc__ or "").strip():
                        out.append(f"{where}: no docstring")
                    continue
                fn = _unwrap(value)
                if not inspect.isfunction(fn):
                    continue
                if name == "__init__":
                    # the constructor is documented by the class docstring (or its own)
                    check_function(where, fn, extra_doc=class_doc)
                else:
                    check_function(where, fn)
        elif inspect.isfunction(obj):
            check_function(qualname, obj)
    return out


def test_public_api_is_documented() -> None:
    offenders = _offenders()
    assert not offenders, f"{len(offenders)} undocumented public names:\n" + "\n".join(offenders)
