"""Fault injection with the real S3 server: it is killed and restarted during a job."""
from __future__ import annotations

import logging
import threading
import time

import pytest

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


def big_result(i):
    return bytes([i % 256]) * 300_000  # over the inline limit: stored, downloaded by the client


@pytest.mark.parametrize("fault", ["slowdown", "refuse", "reset"])
def test_the_clients_storage_requests_survive_a_short_outage(s3_server, fault, caplog):
    """The client's uploads and result downloads go through a proxy that answers 503 SlowDown,
    refuses connections or resets them mid-response for 3 s; the SDK retries nothing
    (retries=1), so wren's own retries are what keeps the results."""
    from wren_testsupport.faultproxy import FaultProxy

    caplog.set_level(logging.INFO, logger="wren.storage")
    with FaultProxy(s3_server.port) as proxy:
        section = s3_server.cos_section("wren-proxy", retries=1)
        section["endpoint"] = proxy.endpoint
        cfg = {"wren": {"storage": "ibm_cos", "retries": 5}, "ibm_cos": section,
               "localhost": {"worker_processes": 2}}
        with wren.function_executor(config=cfg) as ex:
            proxy.fault(fault, seconds=3)  # while the function and data are uploaded
            fs = ex.map(big_result, [(i,) for i in range(6)], extra_args=None)
            ex.wait(fs, timeout=300, throw_except=False)
            proxy.fault(fault, seconds=3)  # while the results are downloaded
            results = ex.get_result(fs, timeout=300)
        assert results == [bytes([i]) * 300_000 for i in range(6)]
        retried = [r.getMessage() for r in caplog.records if r.name == "wren.storage" and "retry" in r.getMessage()]
        assert retried, "the fault hit no request of the client: the test tested nothing"
        assert fault == "refuse" or proxy.counts[fault] > 0
