"""Launch rate of the openwhisk backend: 1000 calls against the OpenWhisk API emulator with
50 ms added to every API request, from one client.

"Launched" = every activation accepted by the controller (HTTP 202), not completed: the
emulator runs no-op actions (it answers the runtime metadata request from this interpreter).
Three figures, interleaved, medians: the limit (the same activations posted by a bare HTTP
client: keep-alive connections, as many threads as the backend's posting pool, no wren), the
backend alone (``invoke`` from the core invoker's threads, as the executor does) and the whole
path through ``FunctionExecutor.map`` (storing the function included), each with its rate as a
fraction of the bare client's and the client's CPU per invocation. Target: map >= 0.8x.

    python bench/bench_openwhisk.py [--calls 1000] [--latency 0.05]
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

ROOT = pathlib.Path(__file__).resolve().parents[1]
EMULATOR = ROOT / "packages" / "wren-backend-openwhisk" / "tests" / "emulator.py"
KEY = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:bench-key-0123456789abcdef"


class Emulator:
    """The emulator in a process of its own (so that its work does not share our GIL)."""

    def __init__(self, latency: float):
        self.proc = subprocess.Popen(
            [sys.executable, str(EMULATOR), "--latency", str(latency), "--runner", "noop", "--key", KEY],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("READY"):
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def _ask(self, cmd: str) -> str:
        self.proc.stdin.write(cmd + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self.proc.stdout.readline()  # type: ignore[union-attr]

    def cpu_seconds(self) -> float | None:
        """CPU time the emulator process used so far (Linux), to show where the cores went."""
        try:
            fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def counts(self) -> dict:
        return json.loads(self._ask("counts"))

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(10)


def wait_accepted(emu: Emulator, n: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = emu.counts()
        if c["accepted"] >= n:
            return c
        time.sleep(0.005)
    raise RuntimeError(f"only {emu.counts()['accepted']} of {n} activations accepted after {timeout} s")


def bench_backend(emu: Emulator, calls: int, max_workers: int) -> float:
    """``OpenWhiskBackend.invoke`` driven by wren's Invoker (what the executor runs)."""
    from wren.config import WrenConfig, parse_section
    from wren.client.invoker import Invoker
    from wren_backend_openwhisk import OpenWhiskBackend, OpenWhiskConfig

    cfg = parse_section(OpenWhiskConfig, "openwhisk", {"endpoint": emu.url, "namespace": "guest", "api_key": KEY})
    backend = OpenWhiskBackend(cfg, WrenConfig(backend="openwhisk"))
    backend.start()
    backend.ensure_action()  # deployed before the clock starts (first use is measured apart)

    class Channel:
        failures: list = []

        def failed(self, job_key, call_id, error):
            self.failures.append(error)

        def deliver(self, status):
            pass

        def running(self, job_key, call_id):
            pass

    channel = Channel()
    invoker = Invoker(backend, max_workers, channel, threads=backend.invoker_threads)  # as the executor makes it
    from wren.records import Call, Job

    # records, as the executor hands them over (attribute access: the invoker's threads need it)
    job = Job(job_key="bench-0/M000", executor_id="bench-0", prefix="bench-0/M000", timeout=60,
              func_name="x" * 2000)
    batch = [Call(call_id=f"{i:05d}", data=b"\x80\x05K\x01.") for i in range(calls)]
    emu.reset()
    t0 = time.monotonic()
    invoker.submit(job, batch)
    try:
        c = wait_accepted(emu, calls, timeout=30)
    except RuntimeError:
        if channel.failures:
            raise RuntimeError(f"{len(channel.failures)} invocations failed: {channel.failures[0]!r}") from None
        raise
    elapsed = time.monotonic() - t0
    invoker.stop()
    backend.close()
    if channel.failures:
        raise RuntimeError(f"{len(channel.failures)} invocations failed: {channel.failures[0]}")
    print(f"  server-side accept window: {c['last_accept'] - c['first_accept']:.3f} s; requests {c['requests']}")
    return elapsed


def deploy(emu: Emulator) -> str:
    """Deploy wren's action on the emulator (as the backend does) and return its name."""
    from wren.config import WrenConfig, parse_section
    from wren_backend_openwhisk import OpenWhiskBackend, OpenWhiskConfig

    cfg = parse_section(OpenWhiskConfig, "openwhisk", {"endpoint": emu.url, "namespace": "guest", "api_key": KEY})
    backend = OpenWhiskBackend(cfg, WrenConfig(backend="openwhisk"))
    backend.start()
    try:
        return backend.ensure_action()
    finally:
        backend.close()


def bench_bare(emu: Emulator, calls: int, concurrency: int, action: str) -> float:
    """The limit: the same activations posted by a bare HTTP client (http.client, one
    keep-alive connection per thread, ``concurrency`` threads: the backend's invoke_pool_size),
    a body of the same size, no wren."""
    import base64
    import http.client
    import queue
    import threading
    import urllib.parse
    from urllib.parse import quote

    url = urllib.parse.urlsplit(emu.url)
    path = f"/api/v1/namespaces/guest/actions/{quote(action, safe='/')}?blocking=false"
    headers = {"Authorization": "Basic " + base64.b64encode(KEY.encode()).decode(),
               "Content-Type": "application/json"}
    body = b'{"job":{"job_key":"bench-0/M000","payload":"' + b"x" * 2000 + b'"},"calls":[{"call_id":"%05d"}]}'
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(calls):
        todo.put(i)
    errors: list = []

    def post() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port)
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                break
            conn.request("POST", path, body=body % i, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 202:
                errors.append(resp.status)
        conn.close()

    emu.reset()
    t0 = time.monotonic()
    threads = [threading.Thread(target=post) for _ in range(min(concurrency, calls))]
    for t in threads:
        t.start()
    wait_accepted(emu, calls)
    elapsed = time.monotonic() - t0
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} bare posts failed: HTTP {errors[0]}")
    return elapsed


def bench_executor(emu: Emulator, calls: int, max_workers: int, storage_root: str) -> float:
    """``FunctionExecutor.map`` of ``calls`` no-op calls until all are accepted."""
    import wren

    config = {
        "wren": {"backend": "openwhisk", "storage": "localhost", "max_workers": max_workers, "progressbar": False},
        "openwhisk": {"endpoint": emu.url, "namespace": "guest", "api_key": KEY},
        "localhost": {"storage_root": storage_root},
    }
    import wren.compute.base as base

    # the workers of this benchmark never run, so local storage is fine: skip the shared-storage check
    base.ComputeBackend.check_storage = lambda self, storage: None  # type: ignore[method-assign]
    with wren.function_executor(config=config) as ex:
        ex.compute.runtime_metadata()  # deploy + metadata before the clock starts
        emu.reset()
        t0 = time.monotonic()
        ex.map(abs, range(calls))
        wait_accepted(emu, calls)
        elapsed = time.monotonic() - t0
        ex.close(clean=True)
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds added to each API request")
    ap.add_argument("--max-workers", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    emu = Emulator(args.latency)
    print(f"OpenWhisk emulator {emu.url}: {args.latency * 1000:.0f} ms per request, no-op actions; "
          f"{args.calls} calls, max_workers {args.max_workers}")
    naive = args.calls * args.latency
    try:
        with tempfile.TemporaryDirectory() as root:
            os.environ["HOME"] = root  # metadata cache, runtime locks: a throwaway home
            from wren_backend_openwhisk import OpenWhiskConfig

            action = deploy(emu)
            runs = {
                "bare HTTP client (the limit)": lambda: bench_bare(emu, args.calls, OpenWhiskConfig().invoke_pool_size,
                                                                   action),
                "backend.invoke via the invoker": lambda: bench_backend(emu, args.calls, args.max_workers),
                "FunctionExecutor.map": lambda: bench_executor(emu, args.calls, args.max_workers, root),
            }
            times: dict[str, list[float]] = {k: [] for k in runs}
            cpu_client: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(args.repeat):  # interleaved: each round runs all three
                for name, fn in runs.items():
                    c0 = time.process_time()
                    times[name].append(fn())
                    cpu_client[name].append(time.process_time() - c0)
            bare = statistics.median(times["bare HTTP client (the limit)"])
            for name in runs:
                med = statistics.median(times[name])
                print(f"{name}: {args.calls} activations accepted in {med:.3f} s (median of {args.repeat}: "
                      f"{', '.join(f'{t:.3f}' for t in times[name])}) = {args.calls / med:,.0f} invocations/s, "
                      f"{bare / med:.2f}x the bare client's rate (target for map: >= 0.8); client CPU "
                      f"{statistics.median(cpu_client[name]) / args.calls * 1e3:.2f} ms per invocation")
            print(f"(one at a time: {naive:.0f} s = {1 / args.latency:.0f}/s; {os.cpu_count()} cores shared "
                  "by client and emulator)")
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
