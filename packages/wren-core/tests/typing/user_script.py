"""A small user program, type-checked by ``nox -s types`` (mypy --strict): the public API's
annotations must let a user's own typed code check cleanly."""
from __future__ import annotations

import wren


def double(x: int) -> int:
    return x * 2


def total(results: list[int]) -> int:
    return sum(results)


def main() -> None:
    with wren.function_executor(max_workers=2) as fexec:
        futures: list[wren.ResponseFuture] = fexec.map(double, range(10), timeout=30)
        done, not_done = fexec.wait(futures, return_when=wren.ALL_COMPLETED)
        assert not not_done and len(done) == 10
        results = fexec.get_result(futures)
        one = fexec.call_async(double, 21)
        print(results, one.result(), one.stats.get("worker_end_tstamp"))
        reduced = fexec.map_reduce(double, [1, 2, 3], total)
        print(fexec.get_result(reduced), fexec.job_summary())
    storage = wren.Storage()
    storage.put_object(storage.bucket, "example/key", b"data")
    print(storage.get_object(storage.bucket, "example/key"))
    try:
        wren.function_executor(backend="no-such-backend")
    except wren.WrenError as exc:
        print(exc)


if __name__ == "__main__":
    main()
