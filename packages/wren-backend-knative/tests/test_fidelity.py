"""Knative's own rules in the stand-in (CRD schema, webhook defaults and limits, the immutable
creator annotation, the queue-proxy's timeouts and bounded queue, Host routing, RBAC, memory
limits) and the client kept within them."""
from __future__ import annotations

import concurrent.futures
import copy
import http.client
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import wren
from wren.config import parse_section
from wren.errors import ConfigError, InvocationError, WorkerDiedError
from wren_backend_knative import KnativeConfig, KnativeServices, load_api_client
from wren_backend_knative.services import KnativeError, service_manifest, service_name


def nap(seconds):
    time.sleep(seconds)
    return seconds


def hog(mb):
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)


class NoPods:
    kind = "none"

    def has_image(self, image):
        return True

    def start(self, ns, name, revision, container):
        from k8s_standin import Endpoint

        return Endpoint("http://127.0.0.1:9", lambda: None, revision)


@pytest.fixture
def api(tmp_path):
    from k8s_standin import KubeStandIn
    from knspec import CRDChecker

    # a checker of its own: these tests send what the schema refuses on purpose
    with KubeStandIn(NoPods(), checker=CRDChecker(), route_by_host=True) as standin:
        standin.kubeconfig_path = standin.write_kubeconfig(str(tmp_path / "kubeconfig"), "wren-unit")
        yield standin


def _services(api):
    client, ns = load_api_client(KnativeConfig(kubeconfig=api.kubeconfig_path))
    return KnativeServices(client, ns, 10)


def _manifest(name="wren-x-256mb", **cfg):
    return service_manifest(name, image="img:1", runtime="img:1", memory=256, config=KnativeConfig(**cfg),
                            namespace="wren-unit", wren_version="0.1.0", python="3.11")


def test_webhook_limits_and_the_crd_schema(api):
    svc = _services(api)
    body = _manifest()
    body["spec"]["template"]["spec"]["timeoutSeconds"] = 700
    with pytest.raises(KnativeError) as info:
        svc.create(body)
    assert info.value.status == 400
    assert ('admission webhook "validation.webhook.serving.knative.dev" denied the request: validation failed: '
            "expected 0 <= 700 <= 600: spec.template.spec.timeoutSeconds") in str(info.value)
    body = _manifest()
    body["spec"]["template"]["spec"]["containerConcurrency"] = 1001
    with pytest.raises(KnativeError, match=r"expected 0 <= 1001 <= 1000: spec.template.spec.containerConcurrency"):
        svc.create(body)
    body = _manifest()
    body["spec"]["template"]["spec"]["timeoutSeconds"] = "ten minutes"
    with pytest.raises(KnativeError) as info:
        svc.create(body)
    assert info.value.status == 422 and "timeoutSeconds" in str(info.value)
    assert api.checker.take_violations()  # the schema checker saw it too
    svc.close()


def test_config_refuses_what_knative_would_refuse():
    with pytest.raises(ConfigError, match=r"timeoutSeconds would be 630.*max-revision-timeout-seconds of 600"):
        parse_section(KnativeConfig, "knative", {"runtime_timeout": 600})
    with pytest.raises(ConfigError, match="container-concurrency-max-limit of 1000"):
        parse_section(KnativeConfig, "knative", {"container_concurrency": 1001})
    assert parse_section(KnativeConfig, "knative", {"runtime_timeout": 900, "max_revision_timeout": 1800})


def test_updates_keep_the_immutable_creator_annotation(api):
    """The webhook sets serving.knative.dev/creator on create and refuses an update that drops
    it; wren's updates carry it over (and others' annotations and labels)."""
    svc = _services(api)
    created, _ = svc.apply(_manifest())
    ann = created["metadata"]["annotations"]
    assert ann["serving.knative.dev/creator"] == "tester" == ann["serving.knative.dev/lastModifier"]
    svc.wait_ready("wren-x-256mb", 20)  # the controller's status writes are done
    svc.patch("wren-x-256mb", {"metadata": {"labels": {"team": "data"}}})

    blind = _manifest(container_concurrency=4)  # what wren sent before: its own annotations only
    blind["metadata"]["resourceVersion"] = svc.get("wren-x-256mb")["metadata"]["resourceVersion"]
    with pytest.raises(KnativeError) as info:
        svc.replace(blind)
    assert info.value.status == 400
    assert "annotation value is immutable: metadata.annotations.serving.knative.dev/creator" in str(info.value)

    updated, changed = svc.apply(_manifest(container_concurrency=4))
    assert changed and updated["metadata"]["generation"] == 2
    assert updated["metadata"]["annotations"]["serving.knative.dev/creator"] == "tester"
    assert updated["metadata"]["labels"]["team"] == "data"
    assert updated["spec"]["template"]["spec"]["containerConcurrency"] == 4
    svc.close()


def test_response_start_and_idle_timeouts_follow_timeout_seconds():
    """Knative defaults responseStartTimeoutSeconds to revision-timeout-seconds (300) when that
    is under timeoutSeconds: a 570 s call would get a 504 at 300 s. wren sets both timers."""
    from k8s_standin import DEFAULTS, webhook_default

    wren_body = _manifest(runtime_timeout=570)
    webhook_default(wren_body, None, "u", DEFAULTS)
    rs = wren_body["spec"]["template"]["spec"]
    assert rs["timeoutSeconds"] == rs["responseStartTimeoutSeconds"] == rs["idleTimeoutSeconds"] == 600
    bare = _manifest(runtime_timeout=570)
    for k in ("responseStartTimeoutSeconds", "idleTimeoutSeconds"):
        del bare["spec"]["template"]["spec"][k]
    webhook_default(bare, None, "u", DEFAULTS)
    assert bare["spec"]["template"]["spec"]["responseStartTimeoutSeconds"] == 300
    assert "idleTimeoutSeconds" not in bare["spec"]["template"]["spec"]  # a zero default sets none


class _SlowPod:
    """A pod that answers after ``delay`` seconds."""

    def __init__(self, delay):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay)
                data = b'{"ok":true}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _post(url, timeout=30):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    conn.request("POST", "/", body=b"{}", headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def test_queue_proxy_timeout_504_and_bounded_queue_503():
    from k8s_standin import Endpoint, Router

    pod = _SlowPod(1.5)
    router = Router([Endpoint(pod.url, lambda: None, "p")], concurrency=0, timeout=10, response_start=0.5)
    try:
        assert _post(router.url) == (504, b"request timeout")
    finally:
        router.server.shutdown()
        router.server.server_close()
    pod.stop()
    pod = _SlowPod(0.3)
    router = Router([Endpoint(pod.url, lambda: None, "p")], concurrency=1, timeout=10, response_start=None)
    try:
        with concurrent.futures.ThreadPoolExecutor(14) as pool:
            codes = sorted(s for s, _ in pool.map(lambda _: _post(router.url), range(14)))
        # 1 running + 10 queued (10 * containerConcurrency) are served; the rest get 503
        assert codes.count(503) >= 1 and router.stats["queue_full"] == codes.count(503)
        assert codes.count(200) >= 11
    finally:
        router.server.shutdown()
        router.server.server_close()
        pod.stop()


def test_the_activator_queues_a_burst_the_queue_proxy_would_refuse():
    from k8s_standin import Endpoint, Router

    pod = _SlowPod(0.05)
    router = Router([Endpoint(pod.url, lambda: None, "p")], concurrency=1, timeout=10, activator=True)
    try:
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(lambda _: _post(router.url), range(20)))
        assert [c for c, _ in codes] == [200] * 20 and router.stats["queue_full"] == 0
    finally:
        router.server.shutdown()
        router.server.server_close()
        pod.stop()


def test_ingress_routes_by_host_and_rbac_refusals(api):
    assert _post(api.ingress_url)[0] == 404  # no route for that host
    api.forbidden_namespaces.add("wren-unit")
    svc = _services(api)
    with pytest.raises(KnativeError) as info:
        svc.list()
    assert info.value.status == 403 and 'cannot list resource "services"' in str(info.value)
    svc.close()


def test_a_long_call_survives_the_queue_proxy(executor_config, standin):
    """With the cluster's response-start default at 2 s, a 4 s call still answers: wren sets
    responseStartTimeoutSeconds = timeoutSeconds (a service without it gets 504s)."""
    saved = dict(standin.config_defaults)
    standin.config_defaults.update({"revision-timeout-seconds": 2, "revision-response-start-timeout-seconds": 2})
    cfg = copy.deepcopy(executor_config)
    cfg["knative"]["runtime_memory"] = 448
    try:
        with wren.function_executor(config=cfg) as ex:
            assert ex.get_result(ex.call_async(nap, 4)) == 4
        svc = standin.get("wren-test", service_name(cfg["knative"]["runtime"], 448))
        assert svc["spec"]["template"]["spec"]["responseStartTimeoutSeconds"] == 150
    finally:
        standin.config_defaults.clear()
        standin.config_defaults.update(saved)


def test_pods_get_their_memory_limit(executor_config, pod_runner):
    runner, _ = pod_runner
    if runner.kind != "docker":
        pytest.skip(f"pods run as {runner.kind}, not containers: no memory limit to enforce")
    cfg = copy.deepcopy(executor_config)
    cfg["knative"]["runtime_memory"] = 192
    with wren.function_executor(config=cfg) as ex:
        assert ex.get_result(ex.call_async(hog, 8)) == 8 * 1024 * 1024
        assert runner.last_limits == {"mem_limit": 192 << 20, "memswap_limit": 192 << 20}
        with pytest.raises((WorkerDiedError, InvocationError)):
            ex.get_result(ex.call_async(hog, 400), timeout=90)


def test_a_job_timeout_that_cannot_fit_is_refused_and_the_default_is_lowered():
    from wren.config import WrenConfig
    from wren.errors import InvalidInputError
    from wren_backend_knative import KnativeBackend

    backend = KnativeBackend(KnativeConfig(runtime_timeout=570), WrenConfig())
    assert backend.check_job({"job_key": "k", "timeout": 600.0})["timeout"] == 570.0  # wren's unchosen default
    assert backend.check_job({"job_key": "k", "timeout": 60.0})["timeout"] == 60.0
    with pytest.raises(InvalidInputError, match=r"timeout 900 s cannot fit.*longest call is 570 s.*maximum 600 s"):
        backend.check_job({"job_key": "k", "timeout": 900.0})
