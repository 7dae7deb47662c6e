"""The code_engine backend through the IAM and Code Engine API v2 stand-ins: big maps split over
job runs, throttling and 5xx storms, refused keys, failed and cancelled job runs, images that
cannot be pulled, what is (not) stored in the bucket, partitioned word count on S3."""
from __future__ import annotations

import collections
import copy
import json
import logging
import time
import uuid

import pytest

import wren
from wren.config import parse_section
from wren.errors import ConfigError, InvocationError
from wren.testing.funcs import count_words, merge_counts, sleep_for
from wren_backend_codeengine import CodeEngineAuthError, CodeEngineConfig, payload
from wren_backend_codeengine.config import MAX_ARRAY_INSTANCES

from ce_standin import operator_delete_run
from workerfuncs import env_of, noop, square, square_where


def _cfg(executor_config, wren_section=None, **ce):
    cfg = copy.deepcopy(executor_config)
    cfg["code_engine"].update(ce)
    cfg["wren"].update(wren_section or {})
    return cfg


def _creates(standin) -> int:
    return standin.counts().get("POST /v2/projects/{id}/job_runs", 0)


# -- configuration ------------------------------------------------------------------------------

def _quiet_requests(ex, standin, quiet=1.0, limit=30.0):
    """The stand-in's request count once the executor's job runs are gone and no request came
    for ``quiet`` seconds (the map that finished still deletes its run and reads its status)."""
    deadline = time.monotonic() + limit
    while ex.compute._runs and time.monotonic() < deadline:
        time.sleep(0.05)
    count = standin.total_requests()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = standin.total_requests()
        if now == count:
            return count
        count = now
    raise AssertionError(f"the stand-in kept getting requests for {limit} s")


def test_invalid_cpu_memory_pair_is_refused_with_the_valid_ones(executor_config, standin):
    with pytest.raises(ConfigError) as info:
        parse_section(CodeEngineConfig, "code_engine", {"runtime_cpu": 0.5, "runtime_memory": 3000})
    msg = str(info.value)
    assert "0.5 vCPU with 3000 MB" in msg and "0.125 vCPU: 256, 512, 1024 MB" in msg and "8 vCPU: 16384, 32768 MB" in msg
    assert "mem-cpu-combo" in msg
    with pytest.raises(ConfigError, match="not a combination Code Engine accepts"):
        wren.function_executor(config=_cfg(executor_config, runtime_memory=1000))
    # a job's own memory must fit the configured vCPU too: refused before any request
    with wren.function_executor(config=executor_config) as ex:
        assert ex.get_result(ex.map(square, [1])) == [1]
        before = _quiet_requests(ex, standin)  # the first job's run is deleted after its results
        with pytest.raises(ConfigError, match="choose runtime_cpu and runtime_memory"):
            ex.map(square, [1], runtime_memory=700)
        assert standin.total_requests() == before
    with pytest.raises(ConfigError, match="over Code Engine's limit of 1000"):
        parse_section(CodeEngineConfig, "code_engine", {"max_array_size": MAX_ARRAY_INSTANCES + 1})
    with pytest.raises(ConfigError, match="region 'mars-1'"):
        parse_section(CodeEngineConfig, "code_engine", {"region": "mars-1"})


def test_payload_is_signed_and_bound_to_its_key():
    job = {"job_key": "j", "secret": "ab" * 16, "root_secret": "cd" * 16, "storage": {"name": "x", "config": {"k": "v"}},
           "config": {"code_engine": {"api_key": "k"}}, "prefix": "p", "bucket": "b"}
    calls = [{"call_id": f"{i:05d}", "data": b"\x00\x01"} for i in range(5)]
    blob = payload.pack(job, calls, 2, "p/a.payload")
    assert b"ab" * 16 not in blob and b"cd" * 16 not in blob and b"api_key" not in blob and b'"k":"v"' not in blob
    data = payload.unpack(blob, job["secret"], "p/a.payload")
    assert payload.calls_of(data, 2) == [calls[4]] and payload.calls_of(data, 0) == calls[:2]
    with pytest.raises(payload.PayloadError, match="replaced or moved"):
        payload.unpack(blob, job["secret"], "p/other.payload")
    with pytest.raises(payload.PayloadError, match="replaced or moved"):
        payload.unpack(blob.replace(b"00004", b"00009"), job["secret"], "p/a.payload")


# -- big jobs ---------------------------------------------------------------------------------------

def test_map_of_2000_calls_over_array_indices_and_split_job_runs(executor_config, fresh_standin):
    """10 instances of 200 calls; runs of at most 4 instances (the stand-in refuses more)."""
    standin = fresh_standin
    standin.max_array_instances = 4
    try:
        cfg = _cfg(executor_config, {"max_workers": 10}, max_array_size=4)
        with wren.function_executor(config=cfg) as ex:
            ex.compute.runtime_metadata()  # the metadata job run, when not cached yet
            before, runs = standin.counts(), len(standin.created_runs)
            t = time.monotonic()
            out = ex.get_result(ex.map(square_where, range(2000)))
            elapsed = time.monotonic() - t
            assert [r for r, _ in out] == [x * x for x in range(2000)]
            assert ex.compute.runs_created == 3
            while ex.compute._runs:  # their deletion belongs to the map
                time.sleep(0.05)
        assert len(standin.created_runs) - runs == 3
        # batch jobs: API requests do not grow with the calls; status reads, one per job run in
        # flight per poll interval (0.3 s), grow with the time the runs take
        used = {k: v - before.get(k, 0) for k, v in standin.counts().items() if v - before.get(k, 0)}
        polls = used.pop("GET /v2/projects/{id}/job_runs/{name}", 0)
        assert sum(used.values()) <= 12, used
        assert polls <= 3 * (elapsed / 0.3 + 3), (polls, elapsed)
        # index i ran calls 200 i .. 200 i + 199, over all three runs
        assert [int(i) for _, i in out] == [x // 200 for x in range(2000)]
    finally:
        standin.max_array_instances = 1000


def test_array_instances_get_code_engines_environment(executor_config):
    names = ["JOB_INDEX", "JOB_ARRAY_SIZE", "CE_JOB", "CE_JOBRUN", "WREN_CE_MANAGED_BY", "WREN_WORKER_CONCURRENCY"]
    with wren.function_executor(config=_cfg(executor_config, {"max_workers": 3})) as ex:
        envs = ex.get_result(ex.map(env_of, [(names,)] * 3))
    assert sorted(e["JOB_INDEX"] for e in envs) == ["0", "1", "2"]
    assert {e["JOB_ARRAY_SIZE"] for e in envs} == {"3"} and {e["WREN_CE_MANAGED_BY"] for e in envs} == {"wren"}
    assert all(e["CE_JOB"].startswith("wren-") and e["CE_JOBRUN"].startswith("wren-") for e in envs)
    assert {e["WREN_WORKER_CONCURRENCY"] for e in envs} == {"2"}


# -- faults of the API --------------------------------------------------------------------------

def test_throttling_and_5xx_storm_complete_with_correct_results(executor_config, fresh_standin):
    standin = fresh_standin
    with wren.function_executor(config=executor_config) as ex:
        standin.throttle(6, retry_after=0.3)
        assert ex.get_result(ex.map(square, range(40))) == [x * x for x in range(40)]
        faults = standin.faults
        standin.fail(4, 503)
        standin.fail(2, 500)
        standin.storm_rate = 0.35
        assert ex.get_result(ex.map(square, range(60))) == [x * x for x in range(60)]
        assert ex.get_result(ex.map(noop, range(30))) == list(range(30))
        standin.storm_rate = 0.0
        assert ex.compute.api.stats["retried"] >= 6 + 6
    assert standin.faults - faults >= 6


def test_bad_api_key_is_refused_without_the_key_anywhere(executor_config, iam, standin, caplog):
    bad = "bad-" + uuid.uuid4().hex
    caplog.set_level(logging.DEBUG)
    refused, creates = iam.refused, _creates(standin)
    ex = wren.function_executor(config=_cfg(executor_config, api_key=bad))
    try:
        with pytest.raises(CodeEngineAuthError) as info:
            ex.map(square, range(3))
    finally:
        ex.close()
    err = info.value
    assert "refused the IBM Cloud API key" in str(err) and "BXNIM0415E" in str(err)
    assert isinstance(err, ConfigError)
    for text in (str(err), repr(err), caplog.text, repr(ex.compute.config), str(err.__cause__ or "")):
        assert bad not in text
    assert iam.refused > refused and _creates(standin) == creates
    assert all(f.error for f in ex.futures)


def test_iam_token_is_renewed(executor_config, iam):
    iam.ttl = 3  # the SDK renews at 80 % of a token's life
    try:
        with wren.function_executor(config=executor_config) as ex:
            grants = iam.grants
            for _ in range(3):
                assert ex.get_result(ex.map(square, [1, 2])) == [1, 4]
                time.sleep(1.5)
            assert iam.grants - grants >= 1
    finally:
        iam.ttl = 3600


# -- failed and cancelled job runs --------------------------------------------------------------

def test_failed_job_run_fails_its_calls_promptly(executor_config, standin):
    with wren.function_executor(config=_cfg(executor_config, {"max_workers": 2})) as ex:
        assert ex.get_result(ex.map(square, [3])) == [9]
        # the run secret disappears (an operator cleaned up): instances cannot start
        for name in list(ex.compute._secrets.values()):
            with standin.lock:
                del standin.secrets[(standin.project_id, name)]
        t = time.monotonic()
        futures = ex.map(square, range(4))
        ex.wait(futures, throw_except=False, timeout=60)
        assert time.monotonic() - t < 20
        for f in futures:
            with pytest.raises(wren.WorkerDiedError, match=r"array index \d, failed: CreateContainerConfigError"):
                ex.get_result(f)


def test_cancelled_job_run_fails_its_calls_promptly(executor_config, standin):
    with wren.function_executor(config=executor_config) as ex:
        fut = ex.call_async(sleep_for, 60)
        run = None
        deadline = time.monotonic() + 60
        while run is None and time.monotonic() < deadline:
            with ex.compute._lock:
                runs = list(ex.compute._runs.values())
            if runs and runs[0].running_indices:
                run = runs[0]
            time.sleep(0.1)
        assert run is not None, "the job run never ran"
        t = time.monotonic()
        assert operator_delete_run(standin, run.name)
        with pytest.raises(wren.WorkerDiedError, match="deleted \\(cancelled\\)"):
            ex.get_result(fut, timeout=30)
        assert time.monotonic() - t < 10


def test_unpullable_image_fails_the_map_promptly_with_code_engines_reason(executor_config):
    cfg = _cfg(executor_config, runtime="wren-runtime-missing:404", deploy_timeout=30)
    t = time.monotonic()
    with wren.function_executor(config=cfg) as ex:
        with pytest.raises(InvocationError, match='ImagePullBackOff: Back-off pulling image "wren-runtime-missing:404"'):
            ex.get_result(ex.map(square, range(3)))
    assert time.monotonic() - t < 30


# -- storage ------------------------------------------------------------------------------------

def test_no_secret_reaches_the_bucket(executor_config, cos_section, ids):
    with wren.function_executor(config=executor_config) as ex:
        assert ex.get_result(ex.map(square, range(10))) == [x * x for x in range(10)]
        st = ex.storage_backend
        keys = st.list_keys(ex.bucket, ex.prefix + "/")
        assert any(k.endswith(".payload") for k in keys)
        secrets = [ids["api_key"], cos_section["secret_access_key"], ex._identity.secret.hex()]
        for key in keys:
            body = st.get_object(ex.bucket, key)
            for s in secrets:
                assert s.encode() not in body, (key, s[:4])


TEXT = "the quick brown fox\njumps over the lazy dog\n" * 3000


def test_partitioned_word_count_on_s3(executor_config, cos_section):
    prefix = f"ce-texts-{uuid.uuid4().hex[:6]}/"
    with wren.function_executor(config=executor_config) as ex:
        for name in ("a.txt", "b.txt"):
            ex.storage_backend.put_object(cos_section["storage_bucket"], prefix + name, TEXT.encode())
        fut = ex.map_reduce(count_words, f"cos://{cos_section['storage_bucket']}/{prefix}", merge_counts,
                            chunk_size=16 * 1024)
        assert ex.get_result(fut) == merge_counts([collections.Counter(TEXT.split())] * 2)
        assert len([f for f in ex.futures if f.kind != "async"]) > 8  # partitioned into chunks


# -- wren clean ---------------------------------------------------------------------------------

def test_clean_removes_runs_secrets_and_with_all_the_jobs(executor_config, standin):
    cfg = _cfg(executor_config, delete_finished_runs=False)
    with wren.function_executor(config=cfg) as ex:
        assert ex.get_result(ex.map(square, [2])) == [4]
        backend = ex.compute
        deadline = time.monotonic() + 30
        while backend._runs and time.monotonic() < deadline:
            time.sleep(0.1)
    pid = standin.project_id
    assert any(k[0] == pid for k in standin.runs)
    removed = backend.clean_resources(all=False)
    assert any(r.startswith("job run ") for r in removed)
    assert not [k for k, r in standin.runs.items() if k[0] == pid and r.get("job_name", "").startswith("wren-")]
    assert any(k[0] == pid for k in standin.jobs)
    removed = backend.clean_resources(all=True)
    assert any(r.startswith("job ") for r in removed)
    assert not [k for k in standin.jobs if k[0] == pid]
    assert not [k for k in standin.secrets if k[0] == pid and k[1].startswith("wren-run-")]
    json.dumps(removed)


# -- registry credentials and names ----------------------------------------------------------------

def test_registry_credentials_become_a_registry_secret_never_shown(executor_config, standin):
    password = "pw-" + uuid.uuid4().hex
    cfg = _cfg(executor_config, registry="127.0.0.1:5999/team", registry_username="iamapikey",
               registry_password=password, runtime="wren-runtime-private:1")
    section = parse_section(CodeEngineConfig, "code_engine", cfg["code_engine"])
    assert password not in repr(section)
    from wren.config import WrenConfig
    from wren_backend_codeengine import CodeEngineBackend, job_name

    backend = CodeEngineBackend(section, WrenConfig())
    try:
        name = backend.ensure_job("wren-runtime-private:1", 0.5, 2048)
    finally:
        backend.close()
    pid = standin.project_id
    job = standin.jobs[(pid, name)]
    assert name == job_name("wren-runtime-private:1", 0.5, 2048)
    assert job["image_reference"] == "127.0.0.1:5999/team/wren-runtime-private:1"
    assert job["image_secret"] == "wren-registry"
    secret = standin.secrets[(pid, "wren-registry")]
    assert secret["format"] == "registry"
    assert secret["data"] == {"server": "127.0.0.1:5999", "username": "iamapikey", "password": password}
    assert password not in json.dumps(job)
    with pytest.raises(ConfigError, match="not both"):
        parse_section(CodeEngineConfig, "code_engine", dict(cfg["code_engine"], registry_secret="mine"))


def test_names_and_plans():
    from wren.config import WrenConfig
    from wren_backend_codeengine import CodeEngineBackend, job_name, parse_indices

    assert parse_indices("0-3,5,7-8") == {0, 1, 2, 3, 5, 7, 8} and parse_indices("") == set()
    name = job_name("icr.io/Team/My_Runtime:" + "x" * 80, 0.125, 256)
    assert len(name) <= 63 and name.endswith("-0p125c-256m") and name == name.lower()
    assert job_name("a:1", 1, 4096) != job_name("a:2", 1, 4096)
    b = CodeEngineBackend(CodeEngineConfig(max_workers=1000), WrenConfig())
    assert b.plan(2000) == (2, 1000) and b.plan(10) == (1, 10) and b.plan(1) == (1, 1)
    b = CodeEngineBackend(CodeEngineConfig(calls_per_instance=3), WrenConfig())
    assert b.plan(10) == (3, 4)
