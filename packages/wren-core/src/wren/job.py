"""Turning a user's call into a job: checking iterdata, binding arguments, packing data.

The argument rule: an item that is a ``tuple`` is spread as positional arguments, a ``dict`` as
keyword arguments, anything else (a list included) is passed as the one argument.
``extra_args`` (a tuple or a dict) is appended to every call. The parameters ``id``,
``storage`` and ``obj`` are reserved: the worker fills them (the call's index, a
:class:`wren.Storage` client, the object partition).

The records sent to the worker runtime are :class:`wren.records.Job` and
:class:`wren.records.Call`.
"""
from __future__ import annotations

import collections.abc
import functools
import inspect
import types
import weakref
from typing import Any
from collections.abc import Callable

from wren import serialize
from wren.bodies import Parts
from wren.errors import DataLimitError, InvalidArgumentBindingError, InvalidInputError

RESERVED = ("id", "storage", "obj", "url")

#: One call's arguments: ``(args, kwargs)``.
CallArgs = tuple[tuple[Any, ...], dict[str, Any]]


def check_function(func: Any) -> None:
    if not callable(func):
        raise InvalidInputError(
            f"the first argument must be the function to run, got {type(func).__name__} {func!r}"
        )
    if inspect.isgeneratorfunction(func) or inspect.iscoroutinefunction(func):
        kind = "a generator function" if inspect.isgeneratorfunction(func) else "a coroutine function"
        raise InvalidInputError(
            f"{getattr(func, '__name__', func)!r} is {kind}, whose result cannot be sent back; "
            "wrap it in a plain function that returns list(...) or asyncio.run(...)"
        )


def func_name(func: Any) -> str:
    """What job records, logs, progress and plots call ``func``: a function's or bound method's
    qualified name (``Model.predict``), ``partial(f)`` for a :func:`functools.partial` of ``f``,
    and a callable instance's class name (never a repr with an address). wren's own wrappers
    (``wren.concurrent``, ``wren.multiprocessing``, ``wren.joblib``) are named after the
    function they run."""
    if isinstance(func, functools.partial):
        if getattr(func.func, "__module__", "").startswith("wren."):
            wrapped = [a for a in func.args if callable(a)]
            if wrapped:
                return func_name(wrapped[-1])
        return f"partial({func_name(func.func)})"
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) and name else type(func).__qualname__


def normalize_iterdata(iterdata: Any) -> list[Any]:
    """Check ``iterdata`` and return it as a list, or explain what to pass instead."""
    if isinstance(iterdata, (str, bytes, bytearray)):
        raise InvalidInputError(
            f"iterdata is a {type(iterdata).__name__}; pass a list of items, e.g. [{iterdata!r}] "
            "for one call (strings are not split into characters)"
        )
    if isinstance(iterdata, collections.abc.Mapping):
        raise InvalidInputError(
            "iterdata is a dict; pass a list of items: [d] for one call with d's keys as keyword "
            "arguments, or list(d.items()) for a call per entry"
        )
    if isinstance(iterdata, (types.GeneratorType, collections.abc.Iterator)):
        raise InvalidInputError(
            f"iterdata is a one-shot iterator ({type(iterdata).__name__}); wren needs every item "
            "up front to plan the job: pass list(...) of it"
        )
    if not isinstance(iterdata, collections.abc.Iterable):
        raise InvalidInputError(
            f"iterdata must be a list, tuple, range or set of items, got {type(iterdata).__name__}"
        )
    items = list(iterdata)
    try:
        claimed = len(iterdata)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - no length, or a broken one: the items are what count
        claimed = len(items)
    if claimed != len(items):
        raise InvalidInputError(
            f"iterdata says it has {claimed} items (len) but iterating it gave {len(items)}; pass "
            "list(...) of exactly the items to map (a pandas DataFrame iterates over its column "
            "names: use df.itertuples(), df.to_dict('records') or a list of rows)"
        )
    return items


def split_item(item: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(item, tuple):
        return item, {}
    if isinstance(item, dict):
        bad = [k for k in item if not isinstance(k, str)]
        if bad:
            raise InvalidInputError(
                f"a dict item is spread as keyword arguments, but it has the non-string key "
                f"{bad[0]!r}; wrap the dict in a tuple, ({item!r},), to pass it as one argument"
            )
        return (), dict(item)
    return (item,), {}


def add_extra_args(args: tuple, kwargs: dict, extra_args: Any) -> tuple[tuple, dict]:
    if extra_args is None:
        return args, kwargs
    if isinstance(extra_args, dict):
        dup = set(extra_args) & set(kwargs)
        if dup:
            raise InvalidInputError(f"extra_args repeats the keyword argument(s) {sorted(dup)}")
        return args, {**kwargs, **extra_args}
    if isinstance(extra_args, tuple):
        return args + extra_args, kwargs
    if isinstance(extra_args, list):
        return args + tuple(extra_args), kwargs
    raise InvalidInputError(
        f"extra_args must be a tuple (appended positional arguments) or a dict (keyword "
        f"arguments), got {type(extra_args).__name__}"
    )


class Binder:
    """Checks each call's arguments against the function's signature, on the client."""

    @classmethod
    def of(cls, func: Callable[..., Any]) -> Binder:
        """The binder of ``func``, reused while the function's signature cannot have changed
        (a plain function with the same code and defaults): ``call_async`` in a loop reads
        the signature once."""
        if type(func) is not types.FunctionType or hasattr(func, "__wrapped__") or hasattr(func, "__signature__"):
            return cls(func)
        state = (func.__code__, func.__defaults__, func.__kwdefaults__)
        cached = _binders.get(func)
        if cached is not None and all(a is b for a, b in zip(cached[0], state, strict=True)):
            return cached[1]
        binder = cls(func)
        _binders[func] = (state, binder)
        return binder

    def __init__(self, func: Callable[..., Any]):
        self.name = func_name(func)
        try:
            self.sig: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):
            self.sig = None  # a builtin without a signature: the worker will tell
        params = self.sig.parameters if self.sig else {}
        # a positional-only parameter (builtins' ``len(obj, /)``) cannot be filled by name
        self.reserved = {
            name: name in params and params[name].kind is not inspect.Parameter.POSITIONAL_ONLY
            for name in RESERVED
        }
        # PyWren 1.x's ``url``: the partition of a URL, as ``obj`` (when there is no ``obj``)
        self.reserved["url"] = self.reserved["url"] and not self.reserved["obj"]
        self.data_param = "obj" if self.reserved["obj"] else "url" if self.reserved["url"] else None
        # plain positional parameters only (the common case): a call with positional arguments
        # binds when their number is in (required, all); no need to ask inspect each time
        self._arity: tuple[int, int] | None = None
        if self.sig is not None and not any(self.reserved.values()) and all(
                p.kind is p.POSITIONAL_OR_KEYWORD for p in params.values()):
            self._arity = (sum(p.default is p.empty for p in params.values()), len(params))

    def bind_var(self, args: tuple, kwargs: dict, where: str) -> tuple[tuple, dict]:
        """A dict item whose keys name the ``*args``/``**kwargs`` parameters (as
        ``inspect.signature(f).bind(...).arguments`` spells a call, and Lithops takes it):
        the call Python would make, ``f(a, *rest, **opts)``. Other items are returned as is."""
        if self.sig is None or args or not kwargs:
            return args, kwargs
        params = self.sig.parameters
        var_pos = next((n for n, p in params.items() if p.kind is p.VAR_POSITIONAL), None)
        var_kw = next((n for n, p in params.items() if p.kind is p.VAR_KEYWORD), None)
        spread_pos = var_pos in kwargs and isinstance(kwargs[var_pos], (tuple, list))
        spread_kw = var_kw in kwargs and isinstance(kwargs[var_kw], collections.abc.Mapping)
        if not (spread_pos or spread_kw):
            return args, kwargs
        arguments: dict[str, Any] = {}
        extra = dict(kwargs[var_kw]) if spread_kw else {}
        for name in params:
            if name not in kwargs or (name == var_kw and spread_kw):
                continue
            arguments[name] = tuple(kwargs[name]) if name == var_pos and spread_pos else kwargs[name]
        if spread_pos:
            before = [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            missing = [n for n in before if n not in arguments]
            if missing:
                raise InvalidArgumentBindingError(
                    f"{where}: the item gives *{var_pos} but not {missing[0]!r}, which comes before it; "
                    f"give every parameter before *{var_pos} (or pass a tuple)"
                )
        leftover = {k: v for k, v in kwargs.items() if k not in params}
        dup = set(extra) & (set(arguments) | set(leftover))
        if dup:
            raise InvalidArgumentBindingError(f"{where}: {sorted(dup)} given twice (also inside {var_kw!r})")
        if var_kw is not None:
            arguments[var_kw] = {**leftover, **extra}
        bound = inspect.BoundArguments(self.sig, arguments)  # type: ignore[arg-type]
        return bound.args, bound.kwargs

    def place_reserved(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Positional arguments skip the reserved parameters, wherever they stand: with
        ``def f(id, x)`` the item ``5`` is ``x`` (the worker fills ``id``), as in the peers.
        Returns the call with those arguments passed by name."""
        if self.sig is None or not args or not any(self.reserved.values()):
            return args, kwargs
        params = list(self.sig.parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        first_reserved = next((i for i, p in enumerate(positional) if self.reserved.get(p.name)), None)
        if first_reserved is None or first_reserved >= len(args):
            return args, kwargs  # reserved parameters come after every positional argument
        free = [p for p in positional if not self.reserved.get(p.name)]
        if any(p.kind is p.POSITIONAL_ONLY for p in free[: len(args)]):
            return args, kwargs  # cannot be passed by name: the binding check will say why
        named = {p.name: a for p, a in zip(free, args, strict=False)}
        dup = set(named) & set(kwargs)
        if dup or len(args) > len(free):
            return args, kwargs  # let the binding check report it
        return (), {**named, **kwargs}

    def check(self, args: tuple, kwargs: dict, where: str) -> None:
        if not kwargs and self._arity is not None and self._arity[0] <= len(args) <= self._arity[1]:
            return
        taken = [n for n in RESERVED if n in kwargs and self.reserved[n]]
        if taken:
            raise InvalidArgumentBindingError(
                f"{where}: {taken[0]!r} is a reserved parameter that wren fills on the worker; "
                "rename the parameter or do not pass it"
            )
        if self.sig is None:
            return
        fill = {n: None for n, present in self.reserved.items() if present}
        try:
            self.sig.bind(*args, **kwargs, **fill)
        except TypeError as exc:
            shown = _describe(args, kwargs)
            hint = ""
            if len(args) == 1 and isinstance(args[0], list):
                hint = " (a list is passed as one argument; make it a tuple to spread it)"
            elif kwargs and not args:
                hint = " (a dict item is spread as keyword arguments; wrap it in a tuple to pass it whole)"
            raise InvalidArgumentBindingError(
                f"{where}: {self.name}{self.sig} cannot be called with {shown}: {exc}{hint}"
            ) from None


_binders: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], Binder]] = weakref.WeakKeyDictionary()


def _describe(args: tuple, kwargs: dict) -> str:
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def _short(v: Any) -> str:
    try:
        r = repr(v)
    except Exception:
        r = f"<{type(v).__name__}>"
    return r if len(r) <= 60 else r[:57] + "..."


def pack_calls(
    arguments: list[tuple[tuple, dict]],
    data_limit_bytes: int,
    inline_limit: int,
    secret: bytes,
    place: Callable[[int], str],
) -> tuple[list[bytes | None], Parts | None, list[tuple[int, int] | None]]:
    """Pickle each call's arguments: small ones stay inline, larger ones go one after the
    other into one object read by byte range, each range signed for its call (``place(i)``).
    Returns (inline data, the aggregate object's body, ranges): the body is a file over the
    pickled pieces, which are not copied again (nor joined) to be stored."""
    inline: list[bytes | None] = []
    ranges: list[tuple[int, int] | None] = []
    chunks: list[bytes] = []
    offset = 0
    dumper = serialize.Dumper()
    for i, (args, kwargs) in enumerate(arguments):
        data = dumper.dumps((args, kwargs), f"the arguments of call {i}")
        if len(data) > data_limit_bytes:
            raise DataLimitError(
                f"call {i}'s data is {len(data) / 2**20:.1f} MiB, over the limit of "
                f"wren.data_limit = {data_limit_bytes / 2**20:g} MiB. Put large inputs in storage (wren.Storage().put_object or "
                "put_cloudobject) and pass the key instead, or raise data_limit"
            )
        if len(data) <= inline_limit:
            inline.append(data)
            ranges.append(None)
        else:
            # each range verifies on its own, for its call
            header = serialize.signature(secret, data, place(i))
            inline.append(None)
            ranges.append((offset, offset + len(header) + len(data) - 1))
            chunks += [header, data]
            offset += len(header) + len(data)
    return inline, (Parts(chunks) if chunks else None), ranges
