"""Benchmark: per-call overhead of the docker backend against the localhost backend.

A no-op map of N calls (default 1000) on each backend, warm (executor created and its workers
started before the clock starts), rounds interleaved; prints the median wall time, the time per
call and the docker/localhost ratio. Both use the same number of workers (one per CPU core) and
local storage. The engine and the runtime come from testsupport/ (a private dockerd and the
debootstrap base image when no engine answers).

    python bench/bench_docker.py [--calls 1000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "testsupport"))

import wren  # noqa: E402


def noop(x):
    return x


def timed_map(fexec, items) -> float:
    t = time.perf_counter()
    got = fexec.get_result(fexec.map(noop, items), show_progressbar=False)
    elapsed = time.perf_counter() - t
    assert got == list(items)
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from wren_testsupport import images
    from wren_testsupport.docker_engine import docker_engine

    workers = os.cpu_count() or 1
    items = list(range(args.calls))
    os.environ.setdefault("WREN_LOCALHOST__STORAGE_ROOT", tempfile.mkdtemp(prefix="wren-bench-docker-"))
    with docker_engine() as engine:
        if not engine:
            print(f"skipped: no Docker engine ({engine.reason})")  # type: ignore[union-attr]
            return 0
        runtime = images.ensure_test_runtime(engine.client())
        docker_cfg = {"wren": {"backend": "docker"}, "docker": {"runtime": runtime, "pool_size": workers}}
        local_cfg = {"wren": {"backend": "localhost"}, "localhost": {"worker_processes": workers}}
        times: dict[str, list[float]] = {"docker": [], "localhost": []}
        with wren.function_executor(config=docker_cfg) as dex, wren.function_executor(config=local_cfg) as lex:
            timed_map(dex, items[:workers * 4])  # warm: pool up, function cached
            timed_map(lex, items[:workers * 4])
            for _ in range(args.rounds):
                times["docker"].append(timed_map(dex, items))
                times["localhost"].append(timed_map(lex, items))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "calls": args.calls,
        "workers": workers,
        "rounds": args.rounds,
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "per_call_ms": {k: round(1000 * v / args.calls, 3) for k, v in med.items()},
        "ratio_docker_over_localhost": round(med["docker"] / med["localhost"], 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"no-op map of {args.calls} calls, {workers} workers, median of {args.rounds} warm rounds")
        for k in ("localhost", "docker"):
            print(f"  {k:<10} {med[k]:7.3f} s   {result['per_call_ms'][k]:7.3f} ms/call")
        print(f"  ratio docker/localhost: {result['ratio_docker_over_localhost']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
