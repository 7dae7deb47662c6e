"""The ``code_engine`` compute backend: wren jobs as IBM Cloud Code Engine batch job runs.

- **One job definition per runtime and size** (``wren-<runtime>-<cpu>c-<memory>m``), made on
  first use or by ``wren runtime deploy``: the runtime image, the command
  ``python3 -m wren_backend_codeengine.entry``, the instance's vCPU and memory, and the literal
  variable ``WREN_CE_MANAGED_BY=wren`` that marks it as wren's.
- **A job run per wren job** (per :meth:`invoke`): the calls are spread over array indices,
  ``per_instance`` consecutive calls each; a job needing more instances than one run may have
  (``max_array_size``, Code Engine's limit is 1000) is split over several runs with consecutive
  index ranges (``0-999``, ``1000-1999``...), all reading one payload object.
- **The payload** (job record without secrets, the calls) is one signed object in storage under
  the job's prefix; the secrets (signing keys, storage credentials, the workers' config) go in a
  Code Engine secret per executor that the run references (see :mod:`.payload`).
- **Results** come back through storage, found by the executor's monitor, as for every backend.
  One watcher thread asks for the status of each job run in flight every ``poll_interval``
  (one request per run, never per call): a failed array index fails its calls at once with Code
  Engine's reason; a run deleted by someone else (cancelled), or one whose image cannot be
  pulled, fails all its calls that have no status yet. Finished runs are deleted (a project
  keeps at most 100).

``manages_concurrency`` is True: the executor hands every call of a job to one ``invoke``, and
``max_workers`` bounds the array instances of a job.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

from wren import runtimes
from wren.compute.base import ComputeBackend, ResultChannel
from wren.config import WrenConfig
from wren.errors import ConfigError, InvocationError, WorkerDiedError, WrenError

from wren_backend_codeengine import payload as pl
from wren_backend_codeengine.api import CodeEngineAPI, CodeEngineError, CodeEngineNotFound
from wren_backend_codeengine.config import (
    MAX_ARRAY_INDEX,
    MAX_EXECUTION_TIME,
    CodeEngineConfig,
    check_combination,
    memory_text,
)

logger = logging.getLogger("wren.code_engine")

ENTRY_COMMAND = ["python3", "-m", "wren_backend_codeengine.entry"]
ENV_RUNTIME = "WREN_CE_RUNTIME"
#: reasons of a pending instance that mean its image will not come
IMAGE_PROBLEMS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
REGISTRY_SECRET = "wren-registry"


def sanitize(text: str, limit: int) -> str:
    """A Code Engine resource name part: lowercase letters, digits and '-'."""
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    out = re.sub(r"-{2,}", "-", out)
    return out[:limit].strip("-") or "x"


def job_name(runtime: str, cpu: float, memory: int) -> str:
    size = f"-{f'{cpu:g}'.replace('.', 'p')}c-{memory}m"
    digest = hashlib.sha256(runtime.encode()).hexdigest()[:6]
    return f"wren-{sanitize(runtime, 62 - 5 - len(size) - 7)}-{digest}{size}"


def parse_indices(text: str | None) -> set[int]:
    """``"0-3,5"`` -> {0, 1, 2, 3, 5}."""
    out: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def _status_names(keys: Sequence[str], prefix: str) -> set[str]:
    """Call ids that have a status record under the job's prefix (any attempt)."""
    out = set()
    for key in keys:
        if key.endswith(".status") and key.startswith(prefix + "/"):
            name = key[len(prefix) + 1: -len(".status")]
            if "/" not in name:
                out.add(name.partition(".r")[0])
    return out


@dataclasses.dataclass
class Run:
    """One job run in flight."""

    name: str
    job: dict[str, Any]
    calls: list[dict[str, Any]]
    per_instance: int
    first: int  # first array index
    last: int  # last array index
    channel: ResultChannel
    created: float = dataclasses.field(default_factory=time.monotonic)
    failed_indices: set[int] = dataclasses.field(default_factory=set)
    running_indices: set[int] = dataclasses.field(default_factory=set)
    deleting: bool = False

    def calls_of(self, index: int) -> list[dict[str, Any]]:
        return self.calls[index * self.per_instance: (index + 1) * self.per_instance]

    def all_calls(self) -> list[dict[str, Any]]:
        return self.calls[self.first * self.per_instance: (self.last + 1) * self.per_instance]


class CodeEngineBackend(ComputeBackend):
    """Calls run as array instances of Code Engine batch job runs."""

    name: ClassVar[str] = "code_engine"
    config_class: ClassVar[type | None] = CodeEngineConfig
    manages_concurrency: ClassVar[bool] = True
    runs_locally: ClassVar[bool] = False

    def __init__(self, config: CodeEngineConfig | None, wren_config: WrenConfig, *, api: CodeEngineAPI | None = None,
                 docker_client: Any = None):
        super().__init__(config or CodeEngineConfig(), wren_config)
        self._api = api
        self._docker = docker_client
        self._lock = threading.RLock()
        self._jobs: dict[str, str] = {}  # job name -> image it runs (ensured)
        self._secrets: dict[str, str] = {}  # digest of run secrets -> secret name
        self._registry_secret: str | None = None
        self._runs: dict[str, Run] = {}
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._metadata: dict[str, dict[str, Any]] = {}
        self._warned: set[str] = set()
        self._closed = False
        #: job runs created (tests and the benchmark read it)
        self.runs_created = 0

    # -- clients ---------------------------------------------------------------------------------
    @property
    def api(self) -> CodeEngineAPI:
        if self._api is None:
            with self._lock:
                if self._api is None:
                    self._api = CodeEngineAPI(self.config)
        return self._api

    @property
    def default_max_workers(self) -> int:
        return self.config.max_workers

    # -- names -----------------------------------------------------------------------------------
    def runtime(self, name: str | None = None) -> str:
        return name or self.config.runtime or self.wren_config.runtime or runtimes.default_runtime_name()

    def image(self, runtime: str) -> str:
        registry = (self.config.registry or "").rstrip("/")
        return f"{registry}/{runtime}" if registry else runtime

    def size(self, memory: int | None = None) -> tuple[float, int]:
        """(vCPU, memory MB) of instances: the config's, with a job's memory if it sets one."""
        cpu = float(self.config.runtime_cpu)
        mem = int(memory or self.config.runtime_memory)
        check_combination(cpu, mem, "code_engine" if not memory else f"code_engine (runtime_memory={memory})")
        return cpu, mem

    # -- job definitions -------------------------------------------------------------------------
    def _registry_secret_name(self) -> str | None:
        if self.config.registry_secret:
            return self.config.registry_secret
        if not self.config.registry_username:
            return None
        if self._registry_secret is None:
            server = (self.config.registry or "").split("/")[0]
            data = {"server": server, "username": self.config.registry_username,
                    "password": self.config.registry_password or ""}
            existing = self.api.call("reading the registry secret", "get_secret", self.api.project_id,
                                     REGISTRY_SECRET, allow_404=True)
            if existing is None:
                self.api.call("creating the registry secret", "create_secret", self.api.project_id,
                              format="registry", name=REGISTRY_SECRET, data=data)
            else:
                self.api.call("updating the registry secret", "replace_secret", self.api.project_id,
                              REGISTRY_SECRET, existing.get("entity_tag") or "*", format="registry", data=data)
            self._registry_secret = REGISTRY_SECRET
        return self._registry_secret

    def job_spec(self, runtime: str, cpu: float, memory: int) -> dict[str, Any]:
        env = [{"type": "literal", "name": pl.ENV_MANAGED, "value": "wren"},
               {"type": "literal", "name": ENV_RUNTIME, "value": runtime},
               {"type": "literal", "name": "WREN_WORKER_CONCURRENCY", "value": str(self.config.processes)},
               {"type": "literal", "name": "PYTHONUNBUFFERED", "value": "1"}]
        env += [{"type": "literal", "name": str(k), "value": str(v)} for k, v in self.config.environment.items()]
        spec = {
            "image_reference": self.image(runtime),
            "run_commands": list(ENTRY_COMMAND),
            "run_arguments": [],
            "run_mode": "task",
            "run_env_variables": env,
            "scale_cpu_limit": f"{cpu:g}",
            "scale_memory_limit": memory_text(memory),
            "scale_max_execution_time": self.config.runtime_timeout + 60,
            "scale_retry_limit": self.config.retry_limit,
            "scale_array_spec": "0",
        }
        secret = self._registry_secret_name()
        if secret:
            spec["image_secret"] = secret
        return spec

    @staticmethod
    def _differs(current: dict[str, Any], spec: dict[str, Any]) -> bool:
        for k, v in spec.items():
            cur = current.get(k)
            if k == "run_env_variables":
                cur = sorted((e.get("name"), e.get("value")) for e in cur or [])
                v = sorted((e["name"], e["value"]) for e in v)
            if cur != v:
                return True
        return False

    def ensure_job(self, runtime: str, cpu: float, memory: int, force: bool = False) -> str:
        """The name of the job definition of ``runtime`` at this size, created or updated."""
        name = job_name(runtime, cpu, memory)
        if not force and name in self._jobs:
            return name
        with runtimes.runtime_lock(f"code-engine-{name}"):
            spec = self.job_spec(runtime, cpu, memory)
            pid = self.api.project_id
            current = self.api.call(f"reading job {name}", "get_job", pid, name, allow_404=True)
            if current is None:
                logger.info("creating Code Engine job %s (image %s, %g vCPU, %d MB)", name, spec["image_reference"],
                            cpu, memory)
                try:
                    self.api.call(f"creating job {name}", "create_job", pid, name=name, **spec)
                except CodeEngineError as exc:
                    if exc.status != 409:  # made by another client meanwhile
                        raise
            elif force or self._differs(current, spec):
                logger.info("updating Code Engine job %s (image %s)", name, spec["image_reference"])
                self.api.call(f"updating job {name}", "update_job", pid, name, current.get("entity_tag") or "*",
                              job=spec)
        self._jobs[name] = spec["image_reference"]
        return name

    # -- run secrets -----------------------------------------------------------------------------
    def _run_secret(self, secret_part: dict[str, Any]) -> str:
        """The Code Engine secret holding ``secret_part`` (one per executor and storage)."""
        text = json.dumps(secret_part, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()
        with self._lock:
            if digest in self._secrets:
                return self._secrets[digest]
            name = f"wren-run-{digest[:24]}"
            try:
                self.api.call("storing the job's secrets", "create_secret", self.api.project_id, format="generic",
                              name=name, data={pl.SECRET_KEY: text})
            except CodeEngineError as exc:
                if exc.status != 409:
                    raise
            self._secrets[digest] = name
            return name

    # -- invoking --------------------------------------------------------------------------------
    def plan(self, n: int) -> tuple[int, int]:
        """(calls per instance, instances) for a job of ``n`` calls."""
        workers = max(1, self.wren_config.max_workers or self.config.max_workers)
        per = self.config.calls_per_instance or math.ceil(n / min(n, workers))
        instances = math.ceil(n / per)
        return per, instances

    def check_job(self, job: dict[str, Any]) -> dict[str, Any]:
        limit = self.config.runtime_timeout
        if job.get("timeout") and job["timeout"] > limit:
            if job["job_key"] not in self._warned:
                self._warned.add(job["job_key"])
                log = logger.info if job["timeout"] == self.wren_config.runtime_timeout else logger.warning
                log("job %s: timeout %g s is over code_engine.runtime_timeout (%d s); calls are stopped after %d s",
                    job["job_key"], job["timeout"], limit, limit)
            job = {**job, "timeout": float(limit)}
        return job

    def invoke(self, job: dict[str, Any], calls: Sequence[dict[str, Any]], channel: ResultChannel) -> None:
        if self._closed:
            raise InvocationError("the code_engine backend is closed (the executor was closed)")
        if self.storage is None:
            raise ConfigError("the code_engine backend needs the executor's storage (it carries the calls)")
        calls = list(calls)
        if not calls:
            return
        job = self.check_job(job)
        cpu, memory = self.size(job.get("runtime_memory"))
        per, instances = self.plan(len(calls))
        if instances - 1 > MAX_ARRAY_INDEX:
            raise InvocationError(f"{len(calls)} calls need {instances} array indices, over Code Engine's "
                                  f"largest index {MAX_ARRAY_INDEX}: raise code_engine.calls_per_instance")
        runtime = self.runtime()
        jname = self.ensure_job(runtime, cpu, memory)
        _, secret_part = pl.split_job(job)
        secret_name = self._run_secret(secret_part)
        token = uuid.uuid4().hex[:10]
        key = f"{job['prefix']}/code_engine/{token}.payload"
        self.storage.put_object(job["bucket"], key, pl.pack(job, calls, per, key))
        rounds = math.ceil(per / self.config.processes)
        max_time = min(MAX_EXECUTION_TIME, int(rounds * (float(job.get("timeout") or self.config.runtime_timeout) + 5)) + 60)
        env = [
            {"type": "literal", "name": pl.ENV_BUCKET, "value": job["bucket"]},
            {"type": "literal", "name": pl.ENV_PAYLOAD, "value": key},
            {"type": "secret_key_reference", "name": pl.ENV_SECRETS, "reference": secret_name, "key": pl.SECRET_KEY},
        ]
        step = self.config.max_array_size
        base = f"wren-{sanitize(job['job_key'], 36)}-{token[:6]}"
        for n, first in enumerate(range(0, instances, step)):
            last = min(instances, first + step) - 1
            run = Run(f"{base}-{n}", job, calls, per, first, last, channel)
            spec = f"{first}-{last}" if last > first else str(first)
            try:
                self.api.call(f"starting job run {run.name} ({last - first + 1} instance(s))", "create_job_run",
                              self.api.project_id, job_name=jname, name=run.name, scale_array_spec=spec,
                              run_env_variables=env, scale_max_execution_time=max_time)
            except CodeEngineError as exc:
                if exc.status != 409:  # 409: an earlier attempt that got no answer made it
                    for c in run.all_calls():
                        channel.failed(job["job_key"], c["call_id"], exc)
                    continue
            with self._lock:
                self._runs[run.name] = run
                self.runs_created += 1
            logger.debug("job run %s: %d call(s) over indices %s", run.name, len(run.all_calls()), spec)
        self._ensure_watcher()

    def cancel(self, job_key: str) -> None:
        with self._lock:
            runs = [r for r in self._runs.values() if r.job["job_key"] == job_key]
        for run in runs:
            self._delete_run(run)

    # -- watching job runs -----------------------------------------------------------------------
    def _ensure_watcher(self) -> None:
        with self._lock:
            if self._watcher is None or not self._watcher.is_alive():
                self._stop.clear()
                self._watcher = threading.Thread(target=self._watch, name="wren-code-engine-watch", daemon=True)
                self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                runs = list(self._runs.values())
            for run in runs:
                if self._stop.is_set():
                    return
                try:
                    self._check(run)
                except Exception as exc:  # noqa: BLE001 - one bad answer must not stop watching
                    logger.warning("checking job run %s failed: %s", run.name, exc)
            self._wake.wait(self.config.poll_interval)
            self._wake.clear()

    def _missing(self, run: Run, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Those of ``calls`` without a status record in storage (one LIST)."""
        prefix = run.job["prefix"]
        try:
            keys = self.storage.list_keys(run.job["bucket"], prefix + "/")
        except Exception:  # noqa: BLE001 - then fail them all: the monitor's record wins if it came
            return calls
        have = _status_names(keys, prefix)
        return [c for c in calls if c["call_id"] not in have]

    def _fail(self, run: Run, calls: list[dict[str, Any]], error: BaseException) -> None:
        for c in self._missing(run, calls):
            run.channel.failed(run.job["job_key"], c["call_id"], error)

    def _check(self, run: Run) -> None:
        if run.deleting:
            return
        state = self.api.call(f"reading job run {run.name}", "get_job_run", self.api.project_id, run.name,
                              allow_404=True)
        key = run.job["job_key"]
        if state is None:
            with self._lock:
                self._runs.pop(run.name, None)
            self._fail(run, run.all_calls(), WorkerDiedError(
                f"Code Engine job run {run.name} was deleted (cancelled) before its calls finished"))
            return
        details = state.get("status_details") or {}
        indices = details.get("indices_details") or {}
        for idx in parse_indices(details.get("running_indices")) - run.running_indices:
            run.running_indices.add(idx)
            for c in run.calls_of(idx):
                run.channel.running(key, c["call_id"])
        for idx in sorted(parse_indices(details.get("failed_indices")) - run.failed_indices):
            run.failed_indices.add(idx)
            reason = (indices.get(str(idx)) or {}).get("last_failure_reason") or "no reason given"
            self._fail(run, run.calls_of(idx), WorkerDiedError(
                f"Code Engine job run {run.name}, array index {idx}, failed: {reason}"))
        for idx in parse_indices(details.get("pending_indices")):
            reason = str((indices.get(str(idx)) or {}).get("last_failure_reason") or "")
            if any(p in reason for p in IMAGE_PROBLEMS):
                self._fail(run, run.all_calls(), InvocationError(
                    f"Code Engine cannot start job run {run.name}: {reason} (image {self._jobs.get(state.get('job_name'), '?')}; "
                    "build and push it with `wren runtime build --push`, or check code_engine.registry_secret)"))
                self._delete_run(run)
                return
        if state.get("status") in ("completed", "failed"):
            if state.get("status") == "failed" and not details.get("failed_indices"):
                self._fail(run, run.all_calls(), WorkerDiedError(
                    f"Code Engine job run {run.name} failed: {state.get('status_details')}"))
            with self._lock:
                self._runs.pop(run.name, None)
            if self.config.delete_finished_runs:
                self._delete_run(run, finished=True)

    def _delete_run(self, run: Run, finished: bool = False) -> None:
        run.deleting = True
        with self._lock:
            self._runs.pop(run.name, None)
        try:
            self.api.call(f"deleting job run {run.name}", "delete_job_run", self.api.project_id, run.name,
                          allow_404=True)
        except CodeEngineError as exc:
            logger.warning("could not delete job run %s: %s", run.name, exc)
        if not finished:
            self._fail(run, run.all_calls(), WorkerDiedError(f"Code Engine job run {run.name} was cancelled"))

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(30)
        with self._lock:
            runs = list(self._runs.values())
            secrets = list(self._secrets.values())
            self._runs.clear()
            self._secrets.clear()
        if self._api is None:
            return
        for run in runs:  # their calls' data is being removed: nothing would read their results
            run.deleting = True
            try:
                self.api.call(f"deleting job run {run.name}", "delete_job_run", self.api.project_id, run.name,
                              allow_404=True)
            except CodeEngineError as exc:
                logger.warning("could not delete job run %s: %s", run.name, exc)
        for name in secrets:
            try:
                self.api.call(f"deleting secret {name}", "delete_secret", self.api.project_id, name, allow_404=True)
            except CodeEngineError as exc:
                logger.warning("could not delete Code Engine secret %s (wren clean removes it): %s", name, exc)

    # -- runtimes --------------------------------------------------------------------------------
    def _wait_run(self, name: str, deadline: float) -> dict[str, Any]:
        """Wait for job run ``name`` to finish; raise with Code Engine's reason if it cannot."""
        pid = self.api.project_id
        last = None
        while True:
            state = self.api.call(f"reading job run {name}", "get_job_run", pid, name, allow_404=True)
            if state is None:
                raise InvocationError(f"Code Engine job run {name} disappeared before it finished")
            details = state.get("status_details") or {}
            reasons = [str(v.get("last_failure_reason")) for v in (details.get("indices_details") or {}).values()
                       if v.get("last_failure_reason")]
            last = "; ".join(reasons) or state.get("status")
            if state.get("status") == "completed":
                return state
            if state.get("status") == "failed":
                raise InvocationError(f"Code Engine job run {name} failed: {last}")
            if any(p in r for r in reasons for p in IMAGE_PROBLEMS):
                raise InvocationError(f"Code Engine cannot start job run {name}: {last}")
            if time.monotonic() > deadline:
                raise InvocationError(f"Code Engine job run {name} did not finish within "
                                      f"{self.config.deploy_timeout:g} s (code_engine.deploy_timeout); last state: {last}")
            time.sleep(min(0.5, self.config.poll_interval))

    def _read_metadata(self, runtime: str, jname: str) -> dict[str, Any]:
        """Run the metadata command as a job run of its own and read what it stored."""
        if self.storage is None:
            raise ConfigError("reading a Code Engine runtime's metadata needs storage the job can write to "
                              "(configure wren.storage, e.g. ibm_cos)")
        bucket = self.storage.default_bucket
        if not self.storage.bucket_exists(bucket):
            self.storage.create_bucket(bucket)
        token = uuid.uuid4().hex
        key = f"wren.runtimes/code_engine/{token}.json"
        mkey = os.urandom(32)
        secret = f"wren-meta-{token[:20]}"
        pid = self.api.project_id
        data = {"storage": {"name": self.storage.name, "config": self.storage.worker_config()}, "bucket": bucket,
                "metadata_key": key, "metadata_secret": mkey.hex()}
        self.api.call("storing the metadata run's secrets", "create_secret", pid, format="generic", name=secret,
                      data={pl.SECRET_KEY: json.dumps(data)})
        run = f"wren-meta-{token[:12]}"
        try:
            self.api.call(f"starting metadata job run {run}", "create_job_run", pid, job_name=jname, name=run,
                          scale_array_spec="0", run_arguments=["--metadata"],
                          run_env_variables=[{"type": "secret_key_reference", "name": pl.ENV_SECRETS,
                                              "reference": secret, "key": pl.SECRET_KEY}])
            try:
                self._wait_run(run, time.monotonic() + self.config.deploy_timeout)
            except InvocationError as exc:
                why = self._stored_metadata(bucket, key, mkey).get("error")
                if why:
                    raise InvocationError(f"{exc}: {why}") from None
                raise
            finally:
                self.api.call(f"deleting job run {run}", "delete_job_run", pid, run, allow_404=True)
            meta = self._stored_metadata(bucket, key, mkey)
            if not meta or "error" in meta:
                raise InvocationError(f"the metadata job run {run} of runtime {runtime!r} wrote no metadata: "
                                      f"{meta.get('error') if meta else 'nothing stored'}")
            return meta
        finally:
            self.api.call(f"deleting secret {secret}", "delete_secret", pid, secret, allow_404=True)

    def _stored_metadata(self, bucket: str, key: str, mkey: bytes) -> dict[str, Any]:
        assert self.storage is not None
        try:
            blob = self.storage.get_object(bucket, key)
        except Exception:  # noqa: BLE001 - nothing was written
            return {}
        self.storage.delete_object(bucket, key)
        return pl.read_metadata(blob, mkey, key)

    def runtime_metadata(self, runtime: str | None = None, memory: int | None = None) -> dict[str, Any]:
        runtime = self.runtime(runtime)
        if runtime in self._metadata:
            return self._metadata[runtime]
        cpu, mem = self.size(memory)
        jname = self.ensure_job(runtime, cpu, mem)
        cache = self.metadata_cache()
        cache_name = f"code_engine-{self.config.region}-{self.api.project_id}-{jname}"
        token = self._jobs.get(jname) or self.image(runtime)
        meta = cache.get(cache_name, token)
        if meta is None:
            meta = self._read_metadata(runtime, jname)
            cache.put(cache_name, meta, token)
        runtimes.check_compatible(meta, runtime, self.name)
        self._metadata[runtime] = meta
        return meta

    def deploy_runtime(self, name: str, memory: int | None = None, **options: Any) -> dict[str, Any]:
        """Create or update the job definition of runtime ``name`` and run the metadata command in
        it (``wren runtime deploy`` and ``update``): an image that cannot be pulled fails here."""
        runtime = self.runtime(name)
        cpu, mem = self.size(memory)
        jname = self.ensure_job(runtime, cpu, mem, force=True)
        self._metadata.pop(runtime, None)
        meta = self._read_metadata(runtime, jname)
        runtimes.check_compatible(meta, runtime, self.name)
        cache = self.metadata_cache()
        cache.put(f"code_engine-{self.config.region}-{self.api.project_id}-{jname}", meta, self._jobs[jname])
        self._metadata[runtime] = meta
        return {"job": jname, "runtime": runtime, "image": self.image(runtime), "cpu": cpu, "memory": mem,
                "project_id": self.api.project_id, "python": meta.get("python"), "wren": meta.get("wren")}

    def _wren_jobs(self) -> list[dict[str, Any]]:
        jobs = self.api.list_all("listing jobs", "list_jobs", "jobs")
        return [j for j in jobs if any(e.get("name") == pl.ENV_MANAGED and e.get("value") == "wren"
                                       for e in j.get("run_env_variables") or [])]

    def list_runtimes(self) -> list[dict[str, Any]]:
        rows = []
        for j in self._wren_jobs():
            env = {e.get("name"): e.get("value") for e in j.get("run_env_variables") or []}
            rows.append({"runtime": env.get(ENV_RUNTIME), "job": j.get("name"), "image": j.get("image_reference"),
                         "cpu": j.get("scale_cpu_limit"), "memory": j.get("scale_memory_limit")})
        return rows

    def delete_runtime(self, name: str, memory: int | None = None) -> None:
        runtime = self.runtime(name)
        mem = memory_text(memory) if memory else None
        for row in self.list_runtimes():
            if row["runtime"] == runtime and (mem is None or row["memory"] == mem):
                self.api.call(f"deleting job {row['job']}", "delete_job", self.api.project_id, row["job"],
                              allow_404=True)
                self._jobs.pop(row["job"], None)
                logger.info("deleted Code Engine job %s", row["job"])
        self._metadata.pop(runtime, None)

    def clean_resources(self, all: bool = False) -> list[str]:  # noqa: A002 - the CLI's word
        """Job runs of wren's jobs that finished (all of them with ``all``), the run secrets
        left by clients that are gone, and with ``all`` wren's job definitions."""
        out = []
        pid = self.api.project_id
        jobs = {j["name"] for j in self._wren_jobs()}
        for run in self.api.list_all("listing job runs", "list_job_runs", "job_runs"):
            if run.get("job_name") in jobs and (all or run.get("status") in ("completed", "failed")):
                self.api.call(f"deleting job run {run['name']}", "delete_job_run", pid, run["name"], allow_404=True)
                out.append(f"job run {run['name']}")
        for sec in self.api.list_all("listing secrets", "list_secrets", "secrets"):
            if sec.get("name", "").startswith(("wren-run-", "wren-meta-")) and sec["name"] not in self._secrets.values():
                self.api.call(f"deleting secret {sec['name']}", "delete_secret", pid, sec["name"], allow_404=True)
                out.append(f"secret {sec['name']}")
        if all:
            for name in sorted(jobs):
                self.api.call(f"deleting job {name}", "delete_job", pid, name, allow_404=True)
                out.append(f"job {name}")
        return out

    # -- building --------------------------------------------------------------------------------
    def runtime_packages(self) -> list[str]:
        """What the image needs beyond wren-core: this backend (its entry point), the storage
        plugins installed here, and ``runtime_packages``."""
        from importlib import metadata

        pkgs = ["wren-backend-codeengine"]
        for dist in ("wren-storage-cos",):
            try:
                metadata.version(dist)
                pkgs.append(dist)
            except metadata.PackageNotFoundError:
                pass
        return pkgs + [p for p in self.config.runtime_packages if p not in pkgs]

    def build_runtime(self, name: str, dockerfile: str | None = None, **options: Any) -> None:
        """Build the runtime image with the Docker engine (``DOCKER_HOST``) through
        :mod:`wren.runtimes`, then push it to ``registry`` (``push`` option, else the config)."""
        push = options.pop("push", None)
        client = self._docker or runtimes.docker_sdk().from_env()
        try:
            options.setdefault("base_image", self.config.base_image)
            options.setdefault("packages", self.runtime_packages())
            runtime = self.runtime(name)
            with runtimes.runtime_lock(f"build-{runtime}"):
                runtimes.build_image(client, runtime, dockerfile=dockerfile, **options)
            if self.config.should_push if push is None else push:
                self.push_runtime(runtime, client)
        finally:
            if client is not self._docker:
                client.close()

    def push_runtime(self, runtime: str, client: Any) -> str:
        if not self.config.registry:
            raise WrenError("pushing a runtime needs code_engine.registry (e.g. icr.io/my-namespace)")
        target = self.image(runtime)
        head, _, last = target.rpartition("/")
        repo, tag = (f"{head}/{last.rsplit(':', 1)[0]}", last.rsplit(":", 1)[1]) if ":" in last else (target, "latest")
        client.images.get(runtime).tag(repo, tag)
        auth = None
        if self.config.registry_username:
            auth = {"username": self.config.registry_username, "password": self.config.registry_password or ""}
        for chunk in client.images.push(repo, tag=tag, auth_config=auth, stream=True, decode=True):
            if "error" in chunk:
                raise WrenError(f"pushing {target} failed: {pl_scrub(chunk['error'], self.config.registry_password)}")
        return target


def pl_scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "****") if secret else text


__all__ = ["CodeEngineBackend", "CodeEngineNotFound", "Run", "job_name", "parse_indices", "sanitize"]
