"""Benchmark: 1000 calls through the knative backend and the Kubernetes API stand-in.

Starts the S3 server (SeaweedFS, for the workers' status records) and, in a process of its
own, the stand-in with its Knative controller (``packages/wren-backend-knative/tests/k8s_standin.py``)
running ``--pods`` pods of the runtime as local processes (``--runner docker``: containers of
the test runtime image on the Docker engine); deploys the service, runs a warm-up map, then
times ``--rounds`` maps of ``--calls`` no-op calls. Prints calls per second, the threads the
client used (peak, grouped by name: wren's invoker pool, the dispatcher's event loop, the
monitor...), the dispatcher's peak of requests in flight, and where the CPU went during the
timed rounds, per call: the client (this process), the stand-in (its API server, ingress and
routers: a test fixture), the pods (their entry points, and the worker processes that run the
calls and write status records), the S3 server; and the bottleneck that follows: with every
part CPU-bound on one machine, the part that spends the most CPU per call.

    PYTHONPATH=testsupport python bench/bench_knative.py [--calls 1000] [--rounds 3] [--pods 8]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packages" / "wren-backend-knative" / "tests"))
sys.path.insert(0, str(ROOT / "testsupport"))

#: threads that are not the client's (the stand-in runs in a process of its own)
NOT_CLIENT = re.compile(r"bench-sampler")
TICK = os.sysconf("SC_CLK_TCK")


def noop(x):
    return x


class ThreadSampler:
    def __init__(self):
        self.peak = 0
        self.peak_names: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-sampler")

    def _run(self):
        while not self._stop.is_set():
            names = [t.name for t in threading.enumerate() if not NOT_CLIENT.search(t.name) and t.name != "bench-sampler"]
            if len(names) > self.peak:
                self.peak = len(names)
                self.peak_names = collections.Counter(re.sub(r"[_-]?\d+$", "", n) for n in names)
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _stat(pid: int) -> tuple[float, float]:
    """CPU seconds of a process: (its own, its children's that it waited for)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return (int(fields[11]) + int(fields[12])) / TICK, (int(fields[13]) + int(fields[14])) / TICK


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _busy() -> float:
    """CPU seconds all processes of the machine have used (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK  # all but idle and iowait


def cpu_snapshot(standin_pid: int, s3_pid: int | None, pods_measured: bool) -> dict[str, float]:
    """CPU seconds so far: this process (the client), the stand-in process, the pods (its
    children: entry points; theirs: the worker processes), the S3 server, the whole machine."""
    own = os.times()
    snap = {"client": own.user + own.system, "machine": _busy()}
    standin, reaped = _stat(standin_pid)
    snap["stand-in"] = standin
    entry = workers = 0.0
    if pods_measured:
        entry = reaped
        for pod in _children(standin_pid):
            mine, theirs = _stat(pod)
            entry += mine
            workers += theirs + sum(sum(_stat(w)) for w in _children(pod))
    snap["pods: entry points"] = entry
    snap["pods: worker processes"] = workers
    snap["S3 server"] = sum(_stat(s3_pid)) if s3_pid else 0.0
    return snap


def standin_child(args) -> int:
    """The stand-in in its own process: writes the kubeconfig, says "ready", runs until stdin closes."""
    from k8s_standin import KubeStandIn, ProcessRunner
    from wren import runtimes

    if args.runner == "docker":
        from k8s_standin import DockerRunner
        from wren_testsupport import docker_engine

        runner = DockerRunner(docker_engine.find_or_start_engine().client())
    else:
        runner = ProcessRunner({runtimes.default_runtime_name()})
    with KubeStandIn(runner, pods_per_revision=args.pods) as api:
        api.write_kubeconfig(args.standin_child)
        print("ready", flush=True)
        sys.stdin.read()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pods", type=int, default=8, help="pods of the revision in the stand-in")
    ap.add_argument("--max-workers", type=int, default=1000)
    ap.add_argument("--runner", choices=("process", "docker"), default="process")
    ap.add_argument("--timeout", type=float, default=None, help="per-call timeout, seconds")
    ap.add_argument("--retries", type=int, default=0, help="wren.retries (re-run calls that timed out or died)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--standin-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.standin_child:
        return standin_child(args)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # stop the servers and pods on the way out

    home = tempfile.mkdtemp(prefix="wren-bench-kn-")
    os.environ["HOME"] = home
    os.environ.pop("WREN_CONFIG_FILE", None)
    import wren
    from wren_testsupport.s3server import S3Server
    from wren import runtimes

    engine = None
    if args.runner == "docker":
        from wren_testsupport import docker_engine, images

        engine = docker_engine.find_or_start_engine()
        if not engine:
            print(f"no Docker engine: {engine.reason}", file=sys.stderr)
            return 1
        os.environ["DOCKER_HOST"] = engine.host
        image = images.ensure_test_runtime(engine.client(), name="wren-runtime-test-knative:latest",
                                           packages=["wren-storage-cos", "pytest"])
    else:
        image = runtimes.default_runtime_name()

    kubeconfig = os.path.join(home, "kubeconfig")
    with S3Server() as s3, subprocess.Popen(
        [sys.executable, __file__, "--standin-child", kubeconfig, "--pods", str(args.pods), "--runner", args.runner],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as standin:
        if standin.stdout.readline().strip() != "ready":
            print("the stand-in did not start", file=sys.stderr)
            return 1
        config = {
            "wren": {"backend": "knative", "storage": "ibm_cos", "max_workers": args.max_workers,
                     "monitor_interval": 0.2, "log_level": "WARNING"},
            "knative": {"kubeconfig": kubeconfig, "runtime": image, "ready_timeout": 120},
            "ibm_cos": s3.cos_section("wren-bench"),
        }
        if args.retries:
            config["wren"]["retries"] = args.retries
        times = []
        retried = failed = 0
        with wren.function_executor(config=config) as ex:
            t = time.perf_counter()
            ex.get_result(ex.map(noop, range(50)), show_progressbar=False)
            deploy_and_warm = time.perf_counter() - t
            cpu_before = cpu_snapshot(standin.pid, s3.proc.pid if s3.proc else None, args.runner == "process")
            with ThreadSampler() as sampler:
                for _ in range(args.rounds):
                    t = time.perf_counter()
                    futures = ex.map(noop, range(args.calls), timeout=args.timeout)
                    out = ex.get_result(futures, show_progressbar=False, throw_except=False)
                    times.append(time.perf_counter() - t)
                    retried += sum(f.stats.get("retries", 0) for f in futures)
                    failed += sum(1 for f in futures if f.error)
                    ok = [i for i, f in enumerate(futures) if not f.error]
                    assert [out[i] for i in ok] == ok
            cpu_after = cpu_snapshot(standin.pid, s3.proc.pid if s3.proc else None, args.runner == "process")
            stats = dict(ex.compute.dispatcher.stats)
            listings = getattr(ex.monitor, "list_requests", None)
            invoker_threads = ex._dispatch._invoker._threads if ex._dispatch._invoker is not None else 0
        standin.stdin.close()
        standin.wait(60)
    if engine is not None:
        engine.stop()

    rates = [args.calls / t for t in times]
    total_calls = args.calls * args.rounds
    wall = sum(times)
    cpu_ms = {k: round(1000 * (cpu_after[k] - cpu_before[k]) / total_calls, 2) for k in cpu_before if k != "machine"}
    if args.runner != "process":
        del cpu_ms["pods: entry points"], cpu_ms["pods: worker processes"]  # containers: not in this tree
    ours = sum(cpu_ms.values())
    machine_ms = 1000 * (cpu_after["machine"] - cpu_before["machine"]) / total_calls
    cores = os.cpu_count() or 1
    parts = dict(cpu_ms)
    if "pods: entry points" in parts:
        parts["pods"] = parts.pop("pods: entry points") + parts.pop("pods: worker processes")
    product = {k: v for k, v in parts.items() if k in ("client", "pods")}
    bottleneck = max(parts, key=parts.get)
    busy = min(1.0, machine_ms * total_calls / 1000 / (wall * cores))
    result = {
        "calls": args.calls, "rounds": args.rounds, "pods": args.pods, "runner": args.runner,
        "max_workers": args.max_workers, "seconds": [round(t, 3) for t in times],
        "calls_per_second_median": round(statistics.median(rates), 1), "calls_per_second_best": round(max(rates), 1),
        "first_map_of_50_with_deploy_s": round(deploy_and_warm, 2),
        "client_threads_peak": sampler.peak, "client_threads_by_name": dict(sampler.peak_names),
        "invoker_pool_threads": invoker_threads, "dispatcher_event_loop_threads": 1,
        "dispatcher_peak_requests_in_flight": stats["peak_in_flight"], "dispatcher_requests": stats["requests"],
        "dispatcher_retries": stats["retried"], "calls_retried_by_wren": retried, "calls_failed": failed,
        "monitor_listings": listings,
        "cpu_ms_per_call": cpu_ms, "cpu_ms_per_call_others_on_machine": round(max(0.0, machine_ms - ours), 2),
        "machine_cores": cores, "machine_busy": round(busy, 2), "bottleneck": bottleneck,
        "bottleneck_in_product": max(product, key=product.get) if product else None,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"knative backend through the stand-in ({args.pods} pods as {args.runner}es, containerConcurrency 1)")
        print(f"  {args.calls} no-op calls x {args.rounds} rounds: {', '.join(f'{t:.2f} s' for t in times)}")
        print(f"  calls per second: median {result['calls_per_second_median']}, best {result['calls_per_second_best']}")
        print(f"  client threads (peak, outside the stand-in and S3 server): {sampler.peak}: "
              f"{dict(sampler.peak_names)}")
        print(f"  dispatcher: 1 event-loop thread, peak {stats['peak_in_flight']} requests in flight, "
              f"{stats['requests']} requests, {stats['retried']} HTTP retries; {retried} calls re-run by wren.retries, "
              f"{failed} failed")
        print(f"  monitor: {listings} listings of the jobs' prefixes in storage (warm-up included)")
        print(f"  CPU per call during the rounds (machine: {cores} cores, {100 * busy:.0f}% busy):")
        for k, v in sorted(cpu_ms.items(), key=lambda kv: -kv[1]):
            print(f"    {k:<24} {v:6.2f} ms")
        print(f"    {'other processes':<24} {result['cpu_ms_per_call_others_on_machine']:6.2f} ms")
        print(f"  bottleneck: {bottleneck} ({parts[bottleneck]:.2f} ms CPU per call of {ours:.2f} ms)"
              + (f"; in the product: {result['bottleneck_in_product']} ({product[result['bottleneck_in_product']]:.2f} ms)"
                 if product else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
