"""Benchmark: 1000 no-op calls through the code_engine backend and the Code Engine API stand-in.

Starts the S3 server (SeaweedFS), the IAM and Code Engine API v2 stand-ins
(``packages/wren-backend-codeengine/tests/ce_standin.py``) with ``--latency`` seconds added to
every API request (default 50 ms, about a cloud API's round trip), running array indices as
local processes (``--runner docker``: containers of the test runtime). After a warm-up map (job
definition, run secret, runtime metadata), it times ``--rounds`` maps of ``--calls`` no-op calls
from ``map()`` to the last result, and counts the API requests each made: batch job runs must
not cost a request per call.

Baselines, measured in the same run: the same maps on the localhost backend with the same S3
storage (wren's own overhead without a platform); the bare stand-in, a job run of the same
instances whose command only imports the entry point, created and polled the same way (the
platform's floor); the time of as many status-sized PUTs to the same S3 server as there are
calls (every call writes its status record); and the floor of API time, the requests made times
the added latency.

    PYTHONPATH=testsupport python bench/bench_codeengine.py [--calls 1000] [--rounds 3] [--instances 8]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import statistics
import sys
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packages" / "wren-backend-codeengine" / "tests"))
sys.path.insert(0, str(ROOT / "testsupport"))


def noop(x):
    return x


def timed_maps(ex, calls: int, rounds: int, standin=None) -> tuple[list[float], list[int]]:
    times, requests = [], []
    for _ in range(rounds):
        before = standin.total_requests() if standin is not None else 0
        t = time.perf_counter()
        out = ex.get_result(ex.map(noop, range(calls)), show_progressbar=False)
        times.append(time.perf_counter() - t)
        assert out == list(range(calls))
        if standin is not None:
            deadline = time.monotonic() + 10  # the finished run's deletion belongs to this map
            while ex.compute._runs and time.monotonic() < deadline:
                time.sleep(0.05)
            requests.append(standin.total_requests() - before)
    return times, requests


def bare_runs(api_client, image: str, instances: int, rounds: int, poll: float) -> list[float]:
    """The platform's own floor: a job run of the same instances whose command only imports
    the entry point (the interpreter, wren, the SDK-free entry module), created and polled to
    completion the way the backend does."""
    pid = api_client.project_id
    api_client.call("job", "create_job", pid, image_reference=image, name="bench-bare",
                    run_commands=["python3", "-c", "import wren, wren_backend_codeengine.entry"],
                    scale_cpu_limit="0.5", scale_memory_limit="2G", scale_retry_limit=0)
    times = []
    for r in range(rounds):
        t = time.perf_counter()
        name = f"bench-bare-{r}"
        api_client.call("run", "create_job_run", pid, job_name="bench-bare", name=name,
                        scale_array_spec=f"0-{instances - 1}")
        while api_client.call("get", "get_job_run", pid, name)["status"] not in ("completed", "failed"):
            time.sleep(poll)
        times.append(time.perf_counter() - t)
        api_client.call("delete", "delete_job_run", pid, name)
    return times


def put_floor(storage, bucket: str, n: int, threads: int) -> float:
    """Seconds for ``n`` status-sized PUTs to the S3 server from ``threads`` threads: what the
    workers' status records cost at least (every call writes one)."""
    import concurrent.futures

    body = b"x" * 600
    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: storage.put_object(bucket, f"bench-put-floor/{i}", body), range(n)))
    took = time.perf_counter() - t
    storage.delete_prefix(bucket, "bench-put-floor/")
    return took


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--instances", type=int, default=8, help="array instances per map (wren.max_workers)")
    ap.add_argument("--latency", type=float, default=0.05, help="seconds added to every API request")
    ap.add_argument("--poll-interval", type=float, default=1.0, help="code_engine.poll_interval")
    ap.add_argument("--processes", type=int, default=2, help="code_engine.worker_processes (calls an instance runs at once)")
    ap.add_argument("--runner", choices=("process", "docker"), default="process")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))

    home = tempfile.mkdtemp(prefix="wren-bench-ce-")
    os.environ["HOME"] = home
    os.environ.pop("WREN_CONFIG_FILE", None)
    import wren
    from ce_standin import CodeEngineStandIn, IAMStandIn, ProcessRunner
    from wren import runtimes
    from wren_testsupport.s3server import S3Server

    engine = None
    if args.runner == "docker":
        from ce_standin import DockerRunner
        from wren_testsupport import images

        engine, client, image, why = images.runtime_on_engine(
            "wren-runtime-test-ce:latest", ["wren-storage-cos", "wren-backend-codeengine", "pytest"])
        if engine is None:
            print(f"no Docker runtime: {why}", file=sys.stderr)
            return 1
        runner = DockerRunner(client)
    else:
        image = runtimes.default_runtime_name()
        runner = ProcessRunner({image})

    key = "bench-" + uuid.uuid4().hex
    iam = IAMStandIn({key}).start()
    try:
        with S3Server() as s3, CodeEngineStandIn(iam, runner, max_running=args.instances) as api:
            api.add_project("bench")
            cos = s3.cos_section("wren-bench")
            base = {"wren": {"storage": "ibm_cos", "monitor_interval": 0.2, "log_level": "WARNING"}, "ibm_cos": cos}

            local_cfg = json.loads(json.dumps(base))
            local_cfg["wren"]["backend"] = "localhost"
            with wren.function_executor(config=local_cfg) as ex:
                ex.get_result(ex.map(noop, range(50)), show_progressbar=False)
                local_times, _ = timed_maps(ex, args.calls, args.rounds)
                puts = put_floor(ex.storage_backend, ex.bucket, args.calls, args.instances * args.processes)

            ce_cfg = json.loads(json.dumps(base))
            ce_cfg["wren"].update(backend="code_engine", max_workers=args.instances)
            ce_cfg["code_engine"] = {"endpoint": api.url, "iam_endpoint": iam.url, "project_name": "bench",
                                     "api_key": key, "runtime": image, "poll_interval": args.poll_interval,
                                     "worker_processes": args.processes}
            with wren.function_executor(config=ce_cfg) as ex:
                t = time.perf_counter()
                before = api.total_requests()
                ex.get_result(ex.map(noop, range(50)), show_progressbar=False)
                warm = time.perf_counter() - t
                warm_requests = api.total_requests() - before
                api.latency = args.latency
                ce_times, ce_requests = timed_maps(ex, args.calls, args.rounds, api)
                bare_times = bare_runs(ex.compute.api, image, args.instances, args.rounds, args.poll_interval)
                api.latency = 0.0
                by_route = api.counts()
    finally:
        iam.stop()
        if engine is not None:
            runner.remove_all()
            engine.stop()

    result = {
        "calls": args.calls, "rounds": args.rounds, "instances": args.instances, "runner": runner.kind,
        "api_latency_s": args.latency, "poll_interval_s": args.poll_interval,
        "code_engine_seconds": [round(t, 3) for t in ce_times],
        "code_engine_api_requests_per_map": ce_requests,
        "localhost_baseline_seconds": [round(t, 3) for t in local_times],
        "code_engine_median_s": round(statistics.median(ce_times), 3),
        "localhost_median_s": round(statistics.median(local_times), 3),
        "bare_standin_job_run_seconds": [round(t, 3) for t in bare_times],
        "bare_standin_median_s": round(statistics.median(bare_times), 3),
        "s3_puts_of_all_statuses_s": round(puts, 3),
        "api_time_floor_s": round(statistics.median(ce_requests) * args.latency, 3),
        "warm_up_map_of_50_s": round(warm, 2), "warm_up_api_requests": warm_requests,
        "api_requests_by_route_whole_run": by_route,
    }
    result["overhead_vs_localhost_s"] = round(result["code_engine_median_s"] - result["localhost_median_s"], 3)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"code_engine backend through the stand-in ({args.instances} array instances as {runner.kind}es, "
              f"{args.latency * 1000:g} ms per API request, status polled every {args.poll_interval:g} s)")
        print(f"  {args.calls} no-op calls, map() to all results: {', '.join(f'{t:.2f} s' for t in ce_times)} "
              f"(median {result['code_engine_median_s']} s)")
        print(f"  API requests per map: {ce_requests} (floor of API time: {result['api_time_floor_s']} s)")
        print(f"  baseline, localhost backend with the same S3 storage: {', '.join(f'{t:.2f} s' for t in local_times)} "
              f"(median {result['localhost_median_s']} s); code_engine adds {result['overhead_vs_localhost_s']} s")
        print(f"  baseline, bare stand-in: a job run of the same {args.instances} instances that only import the entry "
              f"point, polled the same way: {', '.join(f'{t:.2f} s' for t in bare_times)} "
              f"(median {result['bare_standin_median_s']} s)")
        print(f"  baseline, storage: {args.calls} status-sized PUTs to the same S3 server from "
              f"{args.instances * args.processes} threads: {puts:.2f} s")
        print(f"  warm-up map of 50 (job definition, run secret, metadata job run): {result['warm_up_map_of_50_s']} s, "
              f"{warm_requests} API requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
