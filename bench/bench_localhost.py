"""Benchmark: wren's localhost backend against ProcessPoolExecutor on a no-op map.

Prints, for a map of N no-op calls, the wall time of wren (warm: executor and pool already
started; cold: executor creation included) and of
``ProcessPoolExecutor(max_workers=os.cpu_count()).map(f, items, chunksize=1)`` (warm and cold),
the runs interleaved, and the ratios. Target: warm ratio <= 1.5.

    python bench/bench_localhost.py [--calls 1000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import time

import wren


def noop(x):
    return x


def wren_warm(fexec, items):
    t = time.perf_counter()
    fexec.get_result(fexec.map(noop, items), show_progressbar=False)
    return time.perf_counter() - t


def wren_cold(items):
    t = time.perf_counter()
    with wren.function_executor(config={"localhost": {"worker_processes": os.cpu_count()}}) as fexec:
        fexec.get_result(fexec.map(noop, items), show_progressbar=False)
    elapsed = time.perf_counter() - t
    from wren.worker.pool import WorkerPool

    for pool in list(WorkerPool._pools.values()):  # the next cold run starts from nothing
        pool.shutdown()
    WorkerPool._pools.clear()
    return elapsed


def ppe_warm(pool, items):
    t = time.perf_counter()
    list(pool.map(noop, items, chunksize=1))
    return time.perf_counter() - t


def ppe_cold(items):
    t = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(noop, items, chunksize=1))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    items = list(range(args.calls))
    res = {"wren_warm": [], "ppe_warm": [], "wren_cold": [], "ppe_cold": []}
    fexec = wren.function_executor()
    fexec.get_result(fexec.map(noop, items[:50]), show_progressbar=False)  # warm up
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(noop, items[:50], chunksize=1))
        for _ in range(args.rounds):
            res["wren_warm"].append(wren_warm(fexec, items))
            res["ppe_warm"].append(ppe_warm(pool, items))
    fexec.close()
    for _ in range(args.rounds):
        res["wren_cold"].append(wren_cold(items))
        res["ppe_cold"].append(ppe_cold(items))
    med = {k: statistics.median(v) for k, v in res.items()}
    out = {
        "calls": args.calls,
        "cpus": os.cpu_count(),
        **{f"{k}_s": round(v, 4) for k, v in med.items()},
        "warm_ratio": round(med["wren_warm"] / med["ppe_warm"], 2),
        "cold_ratio": round(med["wren_cold"] / med["ppe_cold"], 2),
    }
    print(json.dumps(out))
    print(
        f"no-op map of {args.calls}: wren warm {med['wren_warm']:.3f}s vs ProcessPoolExecutor "
        f"{med['ppe_warm']:.3f}s -> ratio {out['warm_ratio']} (target <= 1.5); cold "
        f"{med['wren_cold']:.3f}s vs {med['ppe_cold']:.3f}s -> ratio {out['cold_ratio']}"
    )


if __name__ == "__main__":
    main()
