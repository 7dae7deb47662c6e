"""Fault injection with the real S3 server: it is killed and restarted during a job."""
from __future__ import annotations

import threading
import time

import wren
from wren_testsupport.s3server import S3Server


def touch_storage(i, storage):
    key = f"faults/{i:04d}"
    storage.put_object(storage.bucket, key, str(i).encode())
    time.sleep(0.1)
    return int(storage.get_object(storage.bucket, key))


def test_s3_server_killed_and_restarted_during_a_job():
    with S3Server() as s3:
        cfg = {"wren": {"storage": "ibm_cos", "retries": 8}, "ibm_cos": s3.cos_section("wren-faults", retries=1)}
        calls = 60
        with wren.function_executor(config=cfg) as ex:
            futures = ex.map(touch_storage, range(calls))
            t0 = time.time()

            def crash_and_recover():
                time.sleep(0.8)
                s3.kill()
                time.sleep(2.0)
                s3.restart()

            chaos = threading.Thread(target=crash_and_recover)
            chaos.start()
            results = ex.get_result(futures, timeout=300)
            elapsed = time.time() - t0
            chaos.join()
            retried = [f for f in futures if f.stats.get("retries")]
        assert results == list(range(calls))
        assert retried, "the outage hit no call: the test did not test anything"
        assert all("system" in f.stats["attempt_errors"][0] for f in retried)
        print(f"\nS3 killed and restarted mid-job: {calls} calls, {len(retried)} retried "
              f"({sum(f.stats['retries'] for f in retried)} retries), results correct, {elapsed:.1f} s")
