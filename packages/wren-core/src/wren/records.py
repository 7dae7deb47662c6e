"""The typed records that travel between client, invoker, backends and worker: :class:`Job`
and :class:`Call`.

A job is what every call of one ``map``/``call_async``/``map_reduce`` step shares (where the
function and data are, the signing key, limits, the config nested executors inherit); a call is
what differs per call (its id, its inline data or the byte range of its data, its partition).
Both cross process and machine boundaries as JSON through :mod:`wren.worker.protocol`:
:meth:`to_wire` gives the versioned wire form, :meth:`from_wire` reads it back (keys it does
not know, from a newer client of the same release, are kept in ``extra`` and sent on).

Backends read fields as attributes (``job.job_key``, ``job.timeout``, ``call.call_id``).
Item access (``job["job_key"]``, ``job.get("timeout")``, ``{**job}``) still works in this
release, for plugins written against the earlier dict records.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from wren.errors import VersionMismatchError
from wren.version import PYTHON_VERSION, __version__

#: Version of the wire form; readers accept this version and records without one.
WIRE_VERSION = 1

R = TypeVar("R", bound="_Record")


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    """The wire fields of a record class but ``extra`` (worked out once per class: records
    are encoded once per call sent)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra" and f.metadata.get("wire", True))


class _Record(Mapping[str, Any]):
    """Read-only mapping view over a dataclass record (the pre-typed dict form)."""

    extra: dict[str, Any]

    def _names(self) -> tuple[str, ...]:
        return _field_names(type(self))

    def __getitem__(self, key: str) -> Any:
        if key != "extra" and key in self.__dataclass_fields__:  # type: ignore[attr-defined]
            return getattr(self, key)
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._names()
        yield from self.extra

    def __len__(self) -> int:
        return len(self._names()) + len(self.extra)

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready form (bytes are encoded by :mod:`wren.worker.protocol`)."""
        out = {name: getattr(self, name) for name in self._names()}
        out.update(self.extra)
        out["v"] = WIRE_VERSION
        return out

    @classmethod
    def from_wire(cls: type[R], data: Mapping[str, Any] | R) -> R:
        """Read a record from its wire form (or return it as is when it is one already)."""
        if isinstance(data, cls):
            return data
        version = data.get("v", WIRE_VERSION)
        if version != WIRE_VERSION:
            raise VersionMismatchError(
                f"this worker reads wren records of version {WIRE_VERSION}, got version {version!r}: "
                "use a runtime built with the same wren version as the client (wren runtime build)"
            )
        fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
        missing = [n for n, f in fields.items()
                   if n not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"a {cls.__name__} record needs the field(s) {', '.join(missing)}")
        known = {k: v for k, v in data.items() if k in fields and k != "extra" and fields[k].metadata.get("wire", True)}
        extra = {k: v for k, v in data.items() if k not in fields and k != "v"}  # in-process fields are dropped
        return cls(**known, extra=extra)  # type: ignore[call-arg]

    def replace(self: R, **changes: Any) -> R:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclasses.dataclass(eq=True)
class Job(_Record):
    """What all calls of one job share."""

    #: ``f"{executor_id}/{job_id}"``: the executor that submitted the job, and its job.
    job_key: str
    executor_id: str = ""
    job_id: str = ""
    #: Storage: the job's folder (statuses and results go under it) and its bucket.
    prefix: str = ""
    bucket: str = ""
    #: The storage plugin workers use: ``{"name": ..., "config": {...}}``.
    storage: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The signed, content-addressed function and (for large data) the aggregated call data.
    func_key: str = ""
    data_key: str | None = None
    func_name: str = ""
    #: Hex signing key of the executor: it travels only in invocations, never in storage.
    secret: str = ""
    executor_prefix: str = ""
    root_id: str = ""
    root_secret: str = ""
    #: Python and wren versions of the client (a runtime with another Python refuses the job).
    python: str = PYTHON_VERSION
    wren: str = __version__
    #: Seconds a call may run; memory in MB the backend should give a worker (``None``: default).
    timeout: float = 600.0
    runtime_memory: int | None = None
    extra_env: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Whether workers write status records to storage (a backend with its own channel back
    #: may not need them); results larger than ``inline_result_limit`` bytes always go there.
    store_results: bool = True
    inline_result_limit: int = 65536
    result_in_storage: bool = False
    #: Which of the reserved parameters (``id``, ``storage``, ``obj``) the function takes.
    reserved: dict[str, bool] = dataclasses.field(default_factory=dict)
    #: The config sections workers get (nested executors inherit them).
    config: dict[str, Any] | None = None
    total_calls: int = 0
    retries: int = 0
    retry_on: list[str] = dataclasses.field(default_factory=list)
    #: The calls' arguments hold futures (chaining) the worker replaces by their results.
    resolve_futures: bool = False
    #: What workers need to push events to a monitor (``None``: storage only).
    events: dict[str, Any] | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The signed function itself (what ``func_key`` holds), for workers handed the job object
    #: in-process (the localhost pool's pipes): they read no storage for it. Never on a wire:
    #: :meth:`to_wire` leaves it out and :meth:`from_wire` ignores it.
    func_package: bytes | None = dataclasses.field(default=None, repr=False, compare=False,
                                                   metadata={"wire": False})

    def __post_init__(self) -> None:
        if not (self.executor_id and self.job_id):
            executor_id, _, job_id = self.job_key.rpartition("/")
            self.executor_id = self.executor_id or executor_id
            self.job_id = self.job_id or job_id

    def __repr__(self) -> str:  # the keys stay out of logs and tracebacks
        return f"Job({self.job_key!r}, func={self.func_name!r}, calls={self.total_calls})"


@dataclasses.dataclass(eq=True)
class Call(_Record):
    """One call of a job."""

    call_id: str
    #: Pickled ``(args, kwargs)`` when small enough to travel inline...
    data: bytes | None = None
    #: ...else the inclusive byte range of its signed data in the job's ``data_key``.
    data_range: tuple[int, int] | None = None
    #: The partition of a stored object for a function with an ``obj`` parameter.
    obj: dict[str, Any] | None = None
    #: 0 for the first attempt; retries and speculative copies count up.
    attempt: int = 0
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data_range is not None:
            self.data_range = (int(self.data_range[0]), int(self.data_range[1]))
        self.attempt = int(self.attempt or 0)

    def __repr__(self) -> str:
        return f"Call({self.call_id!r}, attempt={self.attempt})"
