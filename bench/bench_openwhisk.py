"""Launch rate of the openwhisk backend: 1000 calls against the OpenWhisk API emulator with
50 ms added to every API request, from one client.

"Launched" = every activation accepted by the controller (HTTP 202), not completed: the
emulator runs no-op actions (it answers the runtime metadata request from this interpreter).
Two figures: the backend alone (``invoke`` from the core invoker's threads, as the executor
does) and the whole path through ``FunctionExecutor.map`` (storing the function included).
Target: >= 1000 invocations per second.

    python bench/bench_openwhisk.py [--calls 1000] [--latency 0.05]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
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
    invoker = Invoker(backend, max_workers, channel)
    job = {"job_key": "bench-0/M000", "timeout": 60, "runtime_memory": None, "executor_id": "bench-0",
           "payload": "x" * 2000}
    batch = [{"call_id": f"{i:05d}", "data": b"\x80\x05K\x01.", "data_range": None, "obj": None} for i in range(calls)]
    emu.reset()
    t0 = time.monotonic()
    invoker.submit(job, batch)
    c = wait_accepted(emu, calls)
    elapsed = time.monotonic() - t0
    invoker.stop()
    backend.close()
    if channel.failures:
        raise RuntimeError(f"{len(channel.failures)} invocations failed: {channel.failures[0]}")
    print(f"  server-side accept window: {c['last_accept'] - c['first_accept']:.3f} s; requests {c['requests']}")
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
            for name, fn in (("backend.invoke via the invoker", lambda: bench_backend(emu, args.calls, args.max_workers)),
                             ("FunctionExecutor.map", lambda: bench_executor(emu, args.calls, args.max_workers, root))):
                times, cpu_client, cpu_emulator = [], [], []
                for _ in range(args.repeat):
                    c0, e0 = time.process_time(), emu.cpu_seconds()
                    times.append(fn())
                    cpu_client.append(time.process_time() - c0)
                    if e0 is not None:
                        cpu_emulator.append(emu.cpu_seconds() - e0)  # type: ignore[operator]
                best = min(times)
                i = times.index(best)
                print(f"  CPU per call in the best round: client {cpu_client[i] / args.calls * 1e3:.2f} ms"
                      + (f", emulator {cpu_emulator[i] / args.calls * 1e3:.2f} ms" if cpu_emulator else "")
                      + f" ({os.cpu_count()} cores shared by both)")
                print(f"{name}: {args.calls} activations accepted in {best:.3f} s (best of {args.repeat}: "
                      f"{', '.join(f'{t:.3f}' for t in times)}) = {args.calls / best:,.0f} invocations/s "
                      f"(one at a time: {naive:.0f} s = {1 / args.latency:.0f}/s)")
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
