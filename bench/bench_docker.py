"""Benchmark: per-call overhead of the docker backend against the localhost backend.

Two measurements of a warm no-op map of N calls (default 1000) on each backend, both with one
worker per CPU core and local storage; warm means the executor was created and its workers
(containers or processes) started, and a first small map ran, before the clock starts.

1. **Fresh processes** (the issue's figure): every measurement runs in a new Python process
   (one warm map, timed), docker and localhost alternating, ``--fresh`` of each (>= 5); the
   medians give the per-call overhead (wall time / calls) of each and their ratio, target
   docker/localhost <= 5.
2. **One process** (as before): both executors in this process, ``--rounds`` maps of each,
   interleaved; medians and their ratio.

The engine and the runtime come from testsupport/ (``DOCKER_HOST`` when it answers, else a
private dockerd, and the debootstrap base image).

    PYTHONPATH=testsupport python bench/bench_docker.py [--calls 1000] [--fresh 5] [--rounds 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "testsupport"))

import wren  # noqa: E402

TARGET = 5.0


def noop(x):
    return x


def timed_map(fexec, items) -> float:
    t = time.perf_counter()
    got = fexec.get_result(fexec.map(noop, items), show_progressbar=False)
    elapsed = time.perf_counter() - t
    assert got == list(items)
    return elapsed


def configs(runtime: str, workers: int) -> dict[str, dict]:
    return {
        "docker": {"wren": {"backend": "docker"}, "docker": {"runtime": runtime, "pool_size": workers}},
        "localhost": {"wren": {"backend": "localhost"}, "localhost": {"worker_processes": workers}},
    }


def one(backend: str, runtime: str, workers: int, calls: int) -> float:
    """The child of a fresh-process measurement: one warm map, timed."""
    items = list(range(calls))
    with wren.function_executor(config=configs(runtime, workers)[backend]) as ex:
        timed_map(ex, items[:workers * 4])  # warm: workers up, function cached
        return timed_map(ex, items)


def fresh(runtime: str, workers: int, calls: int, n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"docker": [], "localhost": []}
    for _ in range(n):
        for backend in ("docker", "localhost"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", backend, "--runtime", runtime, "--workers", str(workers),
                 "--calls", str(calls)],
                capture_output=True, text=True, timeout=600, env=os.environ.copy(),
            )
            if out.returncode != 0:
                raise RuntimeError(f"the {backend} measurement failed:\n{out.stderr[-3000:]}")
            times[backend].append(float(out.stdout.strip().splitlines()[-1]))
    return times


def in_process(runtime: str, workers: int, calls: int, rounds: int) -> dict[str, list[float]]:
    items = list(range(calls))
    cfg = configs(runtime, workers)
    times: dict[str, list[float]] = {"docker": [], "localhost": []}
    with wren.function_executor(config=cfg["docker"]) as dex, wren.function_executor(config=cfg["localhost"]) as lex:
        timed_map(dex, items[:workers * 4])
        timed_map(lex, items[:workers * 4])
        for _ in range(rounds):
            times["docker"].append(timed_map(dex, items))
            times["localhost"].append(timed_map(lex, items))
    return times


def summary(times: dict[str, list[float]], calls: int) -> dict:
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "runs": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "per_call_ms": {k: round(1000 * v / calls, 3) for k, v in med.items()},
        "ratio_docker_over_localhost": round(med["docker"] / med["localhost"], 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--fresh", type=int, default=5, help="fresh-process measurements of each backend (>= 5)")
    ap.add_argument("--rounds", type=int, default=3, help="in-process rounds of each backend (0: skip)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=("docker", "localhost"), help=argparse.SUPPRESS)
    ap.add_argument("--runtime", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(one(args.child, args.runtime, args.workers, args.calls))
        return 0
    if args.fresh < 5:
        ap.error("--fresh must be at least 5 (medians of >= 5 measurements)")

    from wren_testsupport import images
    from wren_testsupport.docker_engine import docker_engine

    workers = args.workers
    os.environ.setdefault("WREN_LOCALHOST__STORAGE_ROOT", tempfile.mkdtemp(prefix="wren-bench-docker-"))
    with docker_engine() as engine:
        if not engine:
            print(f"skipped: no Docker engine ({engine.reason})")  # type: ignore[union-attr]
            return 0
        runtime = images.ensure_test_runtime(engine.client())
        result = {"calls": args.calls, "workers": workers, "target_ratio": TARGET}
        result["fresh_process"] = summary(fresh(runtime, workers, args.calls, args.fresh), args.calls)
        if args.rounds:
            result["one_process"] = summary(in_process(runtime, workers, args.calls, args.rounds), args.calls)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"warm no-op map of {args.calls} calls, {workers} workers, local storage")
    for key, title in (("fresh_process", f"fresh process per measurement, median of {args.fresh} each, interleaved"),
                       ("one_process", f"one process, median of {args.rounds} rounds each, interleaved")):
        if key not in result:
            continue
        r = result[key]
        print(f"  {title}:")
        for k in ("localhost", "docker"):
            print(f"    {k:<10} {r['median_s'][k]:7.3f} s   {r['per_call_ms'][k]:7.3f} ms/call   runs {r['runs'][k]}")
        print(f"    per-call overhead ratio docker/localhost: {r['ratio_docker_over_localhost']}"
              + (f" (target <= {TARGET:g})" if key == "fresh_process" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
