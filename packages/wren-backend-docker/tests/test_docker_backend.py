"""The docker backend beyond the conformance suite: dead containers, memory limits, cleanup,
runtimes through the CLI, configuration."""
from __future__ import annotations

import operator
import os
import subprocess
import sys
import time

import docker
import pytest

import wren
from wren import runtimes
from wren.config import WrenConfig
from wren.errors import ConfigError, VersionMismatchError
from wren.future import RUNNING
from wren.testing import funcs
from wren_backend_docker.backend import LABEL, LABEL_VALUE, DockerBackend
from wren_backend_docker.config import DockerConfig
from workerfuncs import hog


def _config(runtime_image, **docker):
    return {
        "wren": {"backend": "docker", "storage": "localhost", "monitor_interval": 0.5},
        "docker": {"runtime": runtime_image, "pool_size": 2, **docker},
    }


def _ours(client, all_=True):
    """This process's wren containers."""
    for _ in range(20):
        try:
            found = client.containers.list(all=all_, filters={"label": f"{LABEL}={LABEL_VALUE}"})
            break
        except docker.errors.NotFound:  # one was removed between the listing and its inspection
            time.sleep(0.1)
    return [c for c in found if c.labels.get("wren.owner-pid") == str(os.getpid())]


@pytest.mark.slow
def test_out_of_memory_call_fails_and_the_rest_completes(runtime_image):
    with wren.function_executor(config=_config(runtime_image, memory=128)) as ex:
        oom = ex.call_async(hog, 600)
        ok = ex.map(funcs.double, range(6))
        t = time.monotonic()
        with pytest.raises(wren.WorkerDiedError, match="SIGKILL|OOM|memory"):
            ex.get_result(oom, timeout=60)
        assert time.monotonic() - t < 30
        assert ex.get_result(ok) == [0, 2, 4, 6, 8, 10]
        assert ex.get_result(ex.call_async(hog, 10)) == 10 * 1024 * 1024


@pytest.mark.slow
def test_killed_container_fails_its_call_and_is_replaced(runtime_image, docker_client):
    with wren.function_executor(config=_config(runtime_image, pool_size=1)) as ex:
        fut = ex.call_async(funcs.sleep_for, 60)
        (container,) = _ours(docker_client, all_=False)
        deadline = time.monotonic() + 30
        while fut.status != RUNNING and time.monotonic() < deadline:  # the call reached the container
            time.sleep(0.05)
        time.sleep(0.5)
        killed_at = time.monotonic()
        container.kill()
        with pytest.raises(wren.WorkerDiedError, match="died") as info:
            ex.get_result(fut, timeout=30)
        assert time.monotonic() - killed_at < 15  # seconds, even on a loaded machine
        assert container.name in str(info.value) and "137" in str(info.value)
        # the pool replaced the container and carries on
        assert ex.get_result(ex.map(funcs.double, range(5))) == [0, 2, 4, 6, 8]
        live = _ours(docker_client, all_=False)
        assert len(live) == 1 and live[0].id != container.id


@pytest.mark.slow
def test_map_of_200_then_no_container_left(runtime_image, docker_client):
    with wren.function_executor(config=_config(runtime_image)) as ex:
        # a builtin: functions of wren.testing import pytest on the worker, ~0.3 s per call
        assert ex.get_result(ex.map(operator.mul, range(200), extra_args=(2,))) == [2 * i for i in range(200)]
        assert len(_ours(docker_client)) == 2
    assert _ours(docker_client) == []


def test_pool_is_shared_by_executors_of_a_process(runtime_image, docker_client):
    cfg = _config(runtime_image)
    with wren.function_executor(config=cfg) as a, wren.function_executor(config=cfg) as b:
        assert a.get_result(a.call_async(funcs.double, 1)) == 2
        assert b.get_result(b.call_async(funcs.double, 2)) == 4
        assert len(_ours(docker_client)) == 2
    assert _ours(docker_client) == []


def test_containers_of_a_dead_client_are_removed(runtime_image, docker_client):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = docker_client.containers.run(
        runtime_image, entrypoint=["sleep", "300"], command=[], detach=True, network_mode="none",
        labels={LABEL: LABEL_VALUE, "wren.owner-host": os.uname().nodename, "wren.owner-pid": str(gone.pid),
                "wren.session": "crashed"},
    )
    with wren.function_executor(config=_config(runtime_image)) as ex:
        assert ex.get_result(ex.call_async(funcs.double, 4)) == 8
    ids = [c.id for c in docker_client.containers.list(all=True)]
    assert orphan.id not in ids


def test_cli_runtime_build_deploy_list_delete(runtime_image, docker_client, tmp_path, capsys):
    from wren.cli import main

    name = "wren-test-cli-runtime:1"
    assert main(["runtime", "build", name, "-b", "docker"]) == 0  # default Dockerfile FROM the test base
    assert main(["runtime", "deploy", name, "-b", "docker", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"python": "3.' in out and f'"wren": "{wren.__version__}"' in out
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {name}\nRUN echo custom > /opt/wren/custom-marker\n")
    custom = "wren-test-cli-custom:1"
    assert main(["runtime", "build", custom, "-b", "docker", "-f", str(dockerfile)]) == 0
    capsys.readouterr()
    assert main(["runtime", "list", "-b", "docker", "--json"]) == 0
    listed = capsys.readouterr().out
    assert name in listed and custom in listed
    assert main(["runtime", "metadata", custom, "-b", "docker"]) == 0
    assert '"wren"' in capsys.readouterr().out
    # calls run on the custom runtime
    with wren.function_executor(config=_config(custom)) as ex:
        assert ex.get_result(ex.call_async(os.path.exists, "/opt/wren/custom-marker")) is True
    for n in (custom, name):
        assert main(["runtime", "delete", n, "-b", "docker"]) == 0
    assert main(["runtime", "deploy", name, "-b", "docker"]) == 1  # gone: a clear error
    assert "wren runtime build" in capsys.readouterr().err


def test_version_mismatch_names_the_fix():
    meta = {"python": "3.7", "wren": "0.0.1", "modules": []}
    with pytest.raises(VersionMismatchError, match=r"wren runtime build wren-runtime-py3\d+:.* -b docker"):
        runtimes.check_compatible(meta, "old-runtime:1", "docker")
    runtimes.check_compatible(
        {"python": f"{sys.version_info[0]}.{sys.version_info[1]}", "wren": wren.__version__}, "ok", "docker"
    )


def test_remote_engine_refuses_local_storage_without_connecting():
    cfg = {"wren": {"backend": "docker", "storage": "localhost"}, "docker": {"docker_host": "tcp://192.0.2.1:2376"}}
    with pytest.raises(ConfigError, match="ibm_cos"):
        wren.function_executor(config=cfg)


def test_config_validation_and_locality():
    assert DockerConfig(docker_host="unix:///x.sock").engine_is_local
    assert DockerConfig(docker_host="tcp://127.0.0.1:2375").engine_is_local
    assert not DockerConfig(docker_host="ssh://me@far").engine_is_local
    for bad in ({"pool_size": 0}, {"memory": 1}, {"docker_host": "ftp://x"}, {"calls_per_worker": 0}):
        with pytest.raises(ConfigError):
            DockerConfig(**bad).validate()
    backend = DockerBackend(DockerConfig(pool_size=3, calls_per_worker=2), WrenConfig())
    assert backend.default_max_workers == 6 and backend._client is None  # no I/O in the constructor


def test_runtime_lock_serialises_builders(tmp_path):
    import threading

    inside = []
    overlap = []

    def builder():
        with runtimes.runtime_lock("lock-test"):
            overlap.append(len(inside))
            inside.append(1)
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=builder) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlap == [0, 0, 0, 0]
    code = "from wren import runtimes\nwith runtimes.runtime_lock('lock-test'):\n    print('held')"
    with runtimes.runtime_lock("lock-test"):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        assert proc.poll() is None  # another process waits for the lock
    assert proc.communicate(timeout=30)[0].strip() == "held"


def test_metadata_cache_follows_the_image(tmp_path):
    cache = runtimes.MetadataCache(tmp_path)
    cache.put("docker-x:1", {"python": "3.11"}, "sha256:a")
    assert cache.get("docker-x:1", "sha256:a") == {"python": "3.11"}
    assert cache.get("docker-x:1", "sha256:b") is None


def test_docker_clean_command_removes_orphans(runtime_image, docker_client, capsys):
    from wren.cli import main

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = docker_client.containers.run(
        runtime_image, entrypoint=["sleep", "300"], command=[], detach=True, network_mode="none",
        labels={LABEL: LABEL_VALUE, "wren.owner-host": os.uname().nodename, "wren.owner-pid": str(gone.pid)},
    )
    assert main(["docker-clean", "--json"]) == 0
    assert orphan.name in capsys.readouterr().out
    assert orphan.id not in [c.id for c in docker_client.containers.list(all=True)]


def _overlaps(futures):
    spans = sorted((f.stats["worker_start_tstamp"], f.stats["worker_end_tstamp"]) for f in futures)
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def test_many_calls_travel_in_few_requests_and_max_workers_caps_them(runtime_image):
    from wren_backend_docker.pool import ContainerPool

    with wren.function_executor(config=_config(runtime_image)) as ex:
        assert ex.get_result(ex.map(operator.neg, range(300))) == [-i for i in range(300)]
        pool = next(p for p in ContainerPool._pools.values() if p.image == runtime_image)
        assert pool.requests < 300  # batches, each answered call by call
        futures = ex.map(time.sleep, [0.2] * 6)
        ex.get_result(futures)
        assert _overlaps(futures) == 2  # both containers at work
    with wren.function_executor(config=_config(runtime_image), max_workers=1) as ex:
        futures = ex.map(time.sleep, [0.2] * 4)
        ex.get_result(futures)
        assert _overlaps(futures) == 1  # never two at once, though two containers are idle


def _task(owner, job_key, call_id, size=0):
    from wren.records import Call, Job
    from wren_backend_docker.scheduling import Task

    return Task(owner, Job(job_key), Call(call_id, data=b"x" * size), None)


def test_call_queue_batches_one_job_takes_turns_and_keeps_caps():
    from wren_backend_docker.scheduling import CallQueue

    q = CallQueue()
    q.put("a", None, [_task("a", "a/J1", str(i)) for i in range(5)] + [_task("a", "a/J2", "x")])
    q.put("b", 2, [_task("b", "b/J1", str(i)) for i in range(5)])
    assert q.queued == 11
    first = q.take(10, 1 << 20)
    assert [t.call.call_id for t in first] == ["0", "1", "2", "3", "4"]  # one job per batch
    second = q.take(10, 1 << 20)
    assert [(t.owner, t.call.call_id) for t in second] == [("b", "0"), ("b", "1")]  # b's cap is 2
    assert q.next_job().job_key == "a/J2" and [t.job.job_key for t in q.take(10, 1 << 20)] == ["a/J2"]
    assert q.take(10, 1 << 20) == [] and q.next_job() is None  # b at its cap, a empty
    assert q.done(second[0]) is True  # b below its cap again, with calls queued
    assert [t.call.call_id for t in q.take(10, 1 << 20)] == ["2"]
    assert q.cancel("b/J1") == 2 and q.queued == 0
    q.put("c", None, [_task("c", "c/J", str(i), size=600) for i in range(4)])
    assert len(q.take(10, 1000)) == 2  # the bytes of inline data bound a batch (the first always goes)
    q.forget("c")
    assert q.queued == 0 and q.next_job() is None


def test_call_queue_remembers_how_long_calls_take():
    from wren_backend_docker.scheduling import CallQueue

    q = CallQueue()
    assert q.seconds("e/J") is None
    q.measured("e/J", {"success": True, "stats": {"worker_start_tstamp": 10.0, "worker_end_tstamp": 10.5}})
    q.measured("e/J", {"success": False, "stats": {"worker_start_tstamp": 10.0, "worker_end_tstamp": 99.0}})
    assert q.seconds("e/J") == 0.5
    q.measured("e/J", {"success": True, "stats": {"worker_start_tstamp": 0.0, "worker_end_tstamp": 1.5}})
    assert 0.5 < q.seconds("e/J") < 1.5
