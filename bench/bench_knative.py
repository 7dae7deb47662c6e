"""Benchmark: 1000 calls through the knative backend and the Kubernetes API stand-in.

Starts the S3 server (SeaweedFS, for the workers' status records), the stand-in with its
Knative controller (``packages/wren-backend-knative/tests/k8s_standin.py``) running
``--pods`` pods of the runtime as local processes (``--runner docker``: containers of the test
runtime image on the Docker engine), deploys the service, runs a warm-up map, then times
``--rounds`` maps of ``--calls`` no-op calls. Prints calls per second and the threads the client
used: the peak number of threads of this process outside the stand-in and the S3 server,
grouped by name (wren's invoker pool, the dispatcher's event loop, the monitor...), and the
dispatcher's peak of requests in flight.

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
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packages" / "wren-backend-knative" / "tests"))
sys.path.insert(0, str(ROOT / "testsupport"))

#: threads that belong to the stand-in or the test servers, not to the client
NOT_CLIENT = re.compile(r"process_request_thread|kube-standin|knative-controller|knative-router|reconcile-|ThreadPoolExecutor")


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
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # stop the servers and pods on the way out

    home = tempfile.mkdtemp(prefix="wren-bench-kn-")
    os.environ["HOME"] = home
    os.environ.pop("WREN_CONFIG_FILE", None)
    import wren
    from k8s_standin import KubeStandIn, ProcessRunner
    from wren_testsupport.s3server import S3Server
    from wren import runtimes

    engine = None
    if args.runner == "docker":
        from k8s_standin import DockerRunner
        from wren_testsupport import docker_engine, images

        engine = docker_engine.find_or_start_engine()
        if not engine:
            print(f"no Docker engine: {engine.reason}", file=sys.stderr)
            return 1
        client = engine.client()
        image = images.ensure_test_runtime(client, name="wren-runtime-test-knative:latest",
                                           packages=["wren-storage-cos", "pytest"])
        runner = DockerRunner(client)
    else:
        image = runtimes.default_runtime_name()
        runner = ProcessRunner({image})

    with S3Server() as s3, KubeStandIn(runner, pods_per_revision=args.pods) as api:
        config = {
            "wren": {"backend": "knative", "storage": "ibm_cos", "max_workers": args.max_workers,
                     "monitor_interval": 0.2, "log_level": "WARNING"},
            "knative": {"kubeconfig": api.write_kubeconfig(os.path.join(home, "kubeconfig")), "runtime": image,
                        "ready_timeout": 120},
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
            stats = dict(ex.compute.dispatcher.stats)
            invoker_threads = ex._dispatch._invoker._threads if ex._dispatch._invoker is not None else 0
    if engine is not None:
        engine.stop()

    rates = [args.calls / t for t in times]
    result = {
        "calls": args.calls, "rounds": args.rounds, "pods": args.pods, "runner": runner.kind,
        "max_workers": args.max_workers, "seconds": [round(t, 3) for t in times],
        "calls_per_second_median": round(statistics.median(rates), 1), "calls_per_second_best": round(max(rates), 1),
        "first_map_of_50_with_deploy_s": round(deploy_and_warm, 2),
        "client_threads_peak": sampler.peak, "client_threads_by_name": dict(sampler.peak_names),
        "invoker_pool_threads": invoker_threads, "dispatcher_event_loop_threads": 1,
        "dispatcher_peak_requests_in_flight": stats["peak_in_flight"], "dispatcher_requests": stats["requests"],
        "dispatcher_retries": stats["retried"], "calls_retried_by_wren": retried, "calls_failed": failed,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"knative backend through the stand-in ({args.pods} pods as {runner.kind}es, containerConcurrency 1)")
        print(f"  {args.calls} no-op calls x {args.rounds} rounds: {', '.join(f'{t:.2f} s' for t in times)}")
        print(f"  calls per second: median {result['calls_per_second_median']}, best {result['calls_per_second_best']}")
        print(f"  client threads (peak, outside the stand-in and S3 server): {sampler.peak}: "
              f"{dict(sampler.peak_names)}")
        print(f"  dispatcher: 1 event-loop thread, peak {stats['peak_in_flight']} requests in flight, "
              f"{stats['requests']} requests, {stats['retried']} HTTP retries; {retried} calls re-run by wren.retries, "
              f"{failed} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
