"""Benchmark: wren's localhost backend against its peers on the workloads of issue 18.

Systems (each only when installed): ``wren`` (localhost backend), ``ppe``
(``concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count())``, ``chunksize=1``: the
baseline of every ratio), ``ppe-fs`` (the same with the ``forkserver`` start method: Python 3.14's
default on Linux, where 3.11-3.13 fork the client; like wren's workers, its workers start from a
fresh interpreter, not a copy of the client), ``mp`` (``multiprocessing.Pool``), ``dask`` (``distributed.LocalCluster``,
one single-threaded worker process per CPU), ``ray`` and ``lithops`` (localhost backend).

Workloads (wall time of the part named; ``warm``: the executor, cluster or pool is started and
has run a warm-up map first; ``cold``: creation included, in-process, imports excluded):

    map100        no-op map of 100, warm          map1000       no-op map of 1,000, warm
    map1000_cold  no-op map of 1,000, cold        cpu50         20 tasks of 50 ms CPU each, warm
    mib1          100 calls returning 1 MiB of random bytes each, warm
    async_cold    one call_async + get_result (submit + result), cold
    async_warm    the same, warm (the median of 21 calls in turn in the process)
    mapreduce100  map_reduce of 100 no-op calls with a summing reducer, warm
    calls20k      20,000 no-op calls, warm; client peak RSS reported
    big300        one call returning 300 MiB of random bytes; peak memory of the client and of the
                  worker above their level before the call, as a multiple of the result's size

Every measurement runs in a fresh process; the systems are interleaved within each round; the
table gives medians and ratios to ``ppe``. ``nox -s bench_peers`` installs the peers.

    python bench/bench_peers.py [--rounds 5] [--systems wren,ppe,mp] [--workloads map100,...]
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any
from collections.abc import Callable

CPUS = os.cpu_count() or 1
MIB = 1 << 20
BIG = 300 * MIB


# -- the functions the workloads run ------------------------------------------------------------
def noop(x):
    return x


def spin50(x):
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    return x


def mib(x):
    return os.urandom(MIB)


def big(x):
    return os.urandom(BIG)


def maxrss(x=None):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def add(results):
    return sum(results)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- adapters: start(), map(f, items) -> list, call(f, x) -> value, map_reduce, stop() ------------
class PPE:
    def start(self):
        import concurrent.futures

        self.p = concurrent.futures.ProcessPoolExecutor(max_workers=CPUS)

    def map(self, f, items):
        return list(self.p.map(f, items, chunksize=1))

    def call(self, f, x):
        return self.p.submit(f, x).result()

    def map_reduce(self, f, items, r):
        return self.p.submit(r, self.map(f, items)).result()

    def stop(self):
        self.p.shutdown()


class PPEForkserver(PPE):
    def start(self):
        import concurrent.futures
        import multiprocessing

        self.p = concurrent.futures.ProcessPoolExecutor(
            max_workers=CPUS, mp_context=multiprocessing.get_context("forkserver"))


class MP(PPE):
    def start(self):
        import multiprocessing

        self.p = multiprocessing.Pool(CPUS)

    def map(self, f, items):
        return self.p.map(f, items, chunksize=1)

    def call(self, f, x):
        return self.p.apply_async(f, (x,)).get()

    def map_reduce(self, f, items, r):
        return self.p.apply_async(r, (self.map(f, items),)).get()

    def stop(self):
        self.p.close()
        self.p.join()


class Wren:
    def start(self):
        import wren

        self.ex = wren.function_executor(config={"localhost": {"worker_processes": CPUS}})

    def map(self, f, items):
        return self.ex.get_result(self.ex.map(f, items), show_progressbar=False)

    def call(self, f, x):
        return self.ex.get_result(self.ex.call_async(f, x), show_progressbar=False)

    def map_reduce(self, f, items, r):
        return self.ex.get_result(self.ex.map_reduce(f, items, r), show_progressbar=False)

    def stop(self):
        from wren.worker.pool import WorkerPool

        self.ex.close()
        for pool in list(WorkerPool._pools.values()):
            pool.shutdown()


class Dask:
    def start(self):
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=CPUS, threads_per_worker=1, processes=True,
                                    dashboard_address=None)
        self.c = Client(self.cluster)

    def map(self, f, items):
        return self.c.gather(self.c.map(f, items, pure=False))

    def call(self, f, x):
        return self.c.submit(f, x, pure=False).result()

    def map_reduce(self, f, items, r):
        return self.c.submit(r, self.c.map(f, items, pure=False), pure=False).result()

    def stop(self):
        self.c.close()
        self.cluster.close()


class Ray:
    def start(self):
        import ray

        self.ray = ray
        ray.init(num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
        self.remote: dict[Any, Any] = {}

    def _r(self, f):
        if f not in self.remote:
            self.remote[f] = self.ray.remote(f)
        return self.remote[f]

    def map(self, f, items):
        return self.ray.get([self._r(f).remote(i) for i in items])

    def call(self, f, x):
        return self.ray.get(self._r(f).remote(x))

    def map_reduce(self, f, items, r):
        refs = [self._r(f).remote(i) for i in items]
        return self.ray.get(self._r(lambda *xs: r(list(xs))).remote(*refs))

    def stop(self):
        self.ray.shutdown()


class Lithops:
    def start(self):
        import lithops

        self.ex = lithops.FunctionExecutor(backend="localhost", storage="localhost", log_level=None)

    def map(self, f, items):
        return self.ex.get_result(self.ex.map(f, items))

    def call(self, f, x):
        return self.ex.get_result(self.ex.call_async(f, x))

    def map_reduce(self, f, items, r):
        return self.ex.get_result(self.ex.map_reduce(f, items, r))

    def stop(self):
        self.ex.clean()


SYSTEMS: dict[str, tuple[Callable[[], Any], str | None]] = {
    "wren": (Wren, "wren"),
    "ppe": (PPE, None),
    "ppe-fs": (PPEForkserver, None),
    "mp": (MP, None),
    "dask": (Dask, "distributed"),
    "ray": (Ray, "ray"),
    "lithops": (Lithops, "lithops"),
}


# -- one measurement (in a fresh process) ------------------------------------------------------
def measure(system: str, workload: str) -> dict[str, Any]:
    module = SYSTEMS[system][1] or {"ppe": "concurrent.futures", "ppe-fs": "concurrent.futures",
                                              "mp": "multiprocessing"}[system]
    importlib.import_module(module)  # imports are not part of any figure, cold ones included
    s = SYSTEMS[system][0]()
    warmup = list(range(4 * CPUS))
    out: dict[str, Any] = {}
    if workload.endswith("_cold"):
        t = time.perf_counter()
        s.start()
        if workload == "map1000_cold":
            s.map(noop, range(1000))
        else:
            s.call(noop, 1)
        out["s"] = time.perf_counter() - t
        s.stop()
        return out
    s.start()
    s.map(noop, warmup)
    if workload == "big300":
        worker_base = max(s.map(maxrss, range(CPUS)))
        gc.collect()
        client_base = _rss()
        t = time.perf_counter()
        value = s.call(big, 0)
        out["s"] = time.perf_counter() - t
        assert len(value) == BIG
        del value
        out["client_x"] = (maxrss() - client_base) / BIG
        s.stop()
        worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        out["worker_x"] = (worker_peak - worker_base) / BIG
        return out
    items = {"map100": 100, "map1000": 1000, "cpu50": 20, "mib1": 100, "mapreduce100": 100,
             "calls20k": 20000, "async_warm": 1}[workload]
    t = time.perf_counter()
    if workload == "async_warm":  # one call's latency: the median of 21 in turn
        lat = []
        for _ in range(21):
            t = time.perf_counter()
            s.call(noop, 1)
            lat.append(time.perf_counter() - t)
        s.stop()
        return {"s": statistics.median(lat)}
    elif workload == "mapreduce100":
        assert s.map_reduce(noop, list(range(items)), add) == sum(range(items))
    else:
        f = {"cpu50": spin50, "mib1": mib}.get(workload, noop)
        res = s.map(f, list(range(items)))
        assert len(res) == items
    out["s"] = time.perf_counter() - t
    if workload == "calls20k":
        out["client_mib"] = maxrss() / MIB
    s.stop()
    return out


WORKLOADS = ["map100", "map1000", "map1000_cold", "cpu50", "mib1", "async_cold", "async_warm",
             "mapreduce100", "calls20k", "big300"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--json", help="also write the medians here")
    ap.add_argument("--one", nargs=2, metavar=("SYSTEM", "WORKLOAD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(*args.one)), flush=True)
        return
    systems = [s for s in args.systems.split(",")
               if SYSTEMS[s][1] is None or importlib.util.find_spec(SYSTEMS[s][1]) is not None]
    workloads = args.workloads.split(",")
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    # Lithops' localhost backend starts ``python``: this interpreter's
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for rnd in range(args.rounds):
        for w in workloads:
            for s in systems if rnd % 2 == 0 else reversed(systems):  # interleaved, alternating order
                try:
                    p = subprocess.run([sys.executable, __file__, "--one", s, w], capture_output=True,
                                       text=True, timeout=args.timeout, env=env)
                    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
                    if not line:
                        print(f"{s} {w}: failed: {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                        continue
                    runs.setdefault((s, w), []).append(json.loads(line[-1][7:]))
                except subprocess.TimeoutExpired:
                    print(f"{s} {w}: timed out", file=sys.stderr)
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    med: dict[str, dict[str, dict[str, float]]] = {}
    for (s, w), rs in runs.items():
        med.setdefault(w, {})[s] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
    print(f"medians of {args.rounds} rounds, {CPUS} CPUs; ratio = time / ppe's time")
    print(f"{'workload':<14}" + "".join(f"{s:>18}" for s in systems))
    for w in workloads:
        row = med.get(w, {})
        base = row.get("ppe", {}).get("s")
        cells = []
        for s in systems:
            m = row.get(s)
            if m is None:
                cells.append(f"{'-':>18}")
                continue
            cell = f"{m['s'] * 1000:.0f}ms" + (f" {m['s'] / base:.2f}x" if base else "")
            cells.append(f"{cell:>18}")
        print(f"{w:<14}" + "".join(cells))
        extra = [f"{s}: " + ", ".join(f"{k}={v:.2f}" for k, v in m.items() if k != "s")
                 for s, m in row.items() if len(m) > 1]
        if extra:
            print(" " * 14 + "; ".join(extra))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(med, f, indent=1)


if __name__ == "__main__":
    main()
