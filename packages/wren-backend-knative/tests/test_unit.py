"""Config, names, manifests, kubeconfig loading, the build's push option and the Kubernetes API
stand-in's conventions, driven through the official client (no pods started here)."""
from __future__ import annotations

import re
import time

import pytest
from kubernetes.client.exceptions import ApiException

from wren import runtimes
from wren.config import WrenConfig, masked, parse_section
from wren.errors import ConfigError, WrenError
from wren_backend_knative import KnativeBackend, KnativeConfig, KnativeNotReadyError, KnativeServices, load_api_client
from wren_backend_knative.services import GROUP, PLURAL, VERSION, service_manifest, service_name


class NoPods:
    """A runner that has every image and starts nothing (pods answer nowhere)."""

    kind = "none"

    def has_image(self, image: str) -> bool:
        return "missing" not in image

    def start(self, ns, name, revision, container):
        from k8s_standin import Endpoint

        return Endpoint("http://127.0.0.1:9", lambda: None, revision)


@pytest.fixture
def api(tmp_path):
    from k8s_standin import KubeStandIn

    with KubeStandIn(NoPods()) as standin:
        standin.kubeconfig_path = standin.write_kubeconfig(str(tmp_path / "kubeconfig"), "wren-unit")
        yield standin


def services(api, **cfg) -> KnativeServices:
    client, ns = load_api_client(KnativeConfig(kubeconfig=api.kubeconfig_path, **cfg))
    return KnativeServices(client, ns, 10)


# -- config and names ---------------------------------------------------------------------------

def test_config_validation_and_secret():
    with pytest.raises(ConfigError, match="min_scale"):
        parse_section(KnativeConfig, "knative", {"min_scale": 5, "max_scale": 2})
    with pytest.raises(ConfigError, match="registry"):
        parse_section(KnativeConfig, "knative", {"push": True})
    with pytest.raises(ConfigError, match="namespace"):
        parse_section(KnativeConfig, "knative", {"namespace": "Not_Valid"})
    with pytest.raises(ConfigError, match="unknown key 'max_scal'"):
        parse_section(KnativeConfig, "knative", {"max_scal": 3})
    cfg = parse_section(KnativeConfig, "knative", {"registry": "r.example.com/t", "registry_username": "u",
                                                   "registry_password": "hunter2"})
    assert cfg.should_push and "hunter2" not in repr(cfg)
    assert masked({"registry_password": "hunter2"}, KnativeConfig)["registry_password"] == "****"


def test_service_names_are_dns_labels():
    for runtime in ("wren-runtime-py311:0.1.0", "registry.example.com:5000/Team/My_Image:v1.2",
                    "a" * 120 + ":latest"):
        name = service_name(runtime, 256)
        assert re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", name) and len(name) <= 50, name
        assert name.endswith("-256mb")
    assert service_name("x" * 100 + ":1", 256) != service_name("x" * 100 + ":2", 256)
    assert service_name("wren-runtime-py311:0.1.0", 256) == "wren-runtime-py311-0-1-0-256mb"
    assert service_name("registry.example.com/team/img:2", 1024) == "wren-img-2-1024mb"


def test_manifest_fields():
    cfg = KnativeConfig(min_scale=1, max_scale=20, container_concurrency=4, runtime_timeout=300, cpu=0.5,
                        cpu_limit=2, image_pull_secret="regcred", service_account="runner", cluster_local=True,
                        environment={"A": 1})
    m = service_manifest("wren-x-512mb", image="reg/x:1", runtime="x:1", memory=512, config=cfg, namespace="ns",
                         wren_version="0.1.0", python="3.11")
    assert m["apiVersion"] == "serving.knative.dev/v1" and m["kind"] == "Service"
    assert m["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "wren"
    assert m["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    tmpl = m["spec"]["template"]
    assert tmpl["metadata"]["annotations"] == {"autoscaling.knative.dev/min-scale": "1",
                                               "autoscaling.knative.dev/max-scale": "20"}
    spec = tmpl["spec"]
    assert spec["containerConcurrency"] == 4 and spec["timeoutSeconds"] == 330
    assert spec["imagePullSecrets"] == [{"name": "regcred"}] and spec["serviceAccountName"] == "runner"
    c = spec["containers"][0]
    assert c["image"] == "reg/x:1" and c["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert c["resources"] == {"requests": {"memory": "512Mi", "cpu": "500m"}, "limits": {"memory": "512Mi", "cpu": "2000m"}}
    assert c["env"] == [{"name": "A", "value": "1"}]


def test_no_io_in_constructor_and_clear_config_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    backend = KnativeBackend(KnativeConfig(kubeconfig=str(tmp_path / "nope")), WrenConfig())
    with pytest.raises(ConfigError, match="does not exist"):
        backend.services  # noqa: B018
    bare = KnativeBackend(KnativeConfig(), WrenConfig())
    with pytest.raises(ConfigError, match="no Kubernetes config"):
        bare.services  # noqa: B018
    backend.close()


def test_kubeconfig_context_and_namespace(api):
    client, ns = load_api_client(KnativeConfig(kubeconfig=api.kubeconfig_path))
    assert ns == "wren-unit" and client.configuration.host == api.url
    assert load_api_client(KnativeConfig(kubeconfig=api.kubeconfig_path, context="other"))[1] == "other-ns"
    assert load_api_client(KnativeConfig(kubeconfig=api.kubeconfig_path, namespace="mine"))[1] == "mine"
    with pytest.raises(ConfigError, match="nosuch"):
        load_api_client(KnativeConfig(kubeconfig=api.kubeconfig_path, context="nosuch"))


# -- the build's push option (no registry is reachable here: a recording Docker client) -----------

class FakeImage:
    def __init__(self, log):
        self.log = log

    def tag(self, repo, tag):
        self.log.append(("tag", repo, tag))
        return True


class FakeDocker:
    def __init__(self, push_error=None):
        self.log: list = []
        self.push_error = push_error
        outer = self

        class Images:
            def get(self, name):
                outer.log.append(("get", name))
                return FakeImage(outer.log)

        class API:
            def push(self, repo, tag=None, auth_config=None, stream=False, decode=False):
                outer.log.append(("push", repo, tag, auth_config, stream, decode))
                yield {"status": "Pushing"}
                if outer.push_error:
                    yield {"error": outer.push_error}

        self.images = Images()
        self.api = API()

    def close(self):
        self.log.append(("close",))


def test_build_pushes_to_the_registry_with_credentials(monkeypatch):
    built = []
    monkeypatch.setattr(runtimes, "build_image", lambda client, name, **kw: built.append((name, kw)) or "sha256:1")
    docker = FakeDocker()
    cfg = KnativeConfig(registry="registry.example.com:5000/team", registry_username="robot",
                        registry_password="s3cret", base_image="wren-test-base:bookworm", runtime_packages=["pkg"])
    backend = KnativeBackend(cfg, WrenConfig(), docker_client=docker)
    backend.build_runtime("myrt:1.0")
    assert built == [("myrt:1.0", {"dockerfile": None, "base_image": "wren-test-base:bookworm", "packages": ["pkg"]})]
    assert ("tag", "registry.example.com:5000/team/myrt", "1.0") in docker.log
    assert ("push", "registry.example.com:5000/team/myrt", "1.0", {"username": "robot", "password": "s3cret"},
            True, True) in docker.log
    assert backend.image("myrt:1.0") == "registry.example.com:5000/team/myrt:1.0"
    # push=False as a build option wins over the config; an injected client is not closed
    docker.log.clear()
    backend.build_runtime("myrt:1.0", push=False)
    assert not [e for e in docker.log if e[0] in ("push", "close")]


def test_push_failure_is_clear_and_hides_the_password(monkeypatch):
    monkeypatch.setattr(runtimes, "build_image", lambda client, name, **kw: "sha256:1")
    docker = FakeDocker(push_error="unauthorized: login with password s3cret refused")
    cfg = KnativeConfig(registry="r.example.com", registry_username="robot", registry_password="s3cret")
    with pytest.raises(WrenError, match=r"pushing runtime 'r.example.com/rt:2' failed: unauthorized") as info:
        KnativeBackend(cfg, WrenConfig(), docker_client=docker).build_runtime("rt:2")
    assert "s3cret" not in str(info.value)


def test_no_push_without_registry(monkeypatch):
    monkeypatch.setattr(runtimes, "build_image", lambda client, name, **kw: "sha256:1")
    docker = FakeDocker()
    KnativeBackend(KnativeConfig(), WrenConfig(), docker_client=docker).build_runtime("rt:3")
    assert not [e for e in docker.log if e[0] == "push"]


# -- the stand-in follows the API conventions (through the official client) -----------------------

def _body(name, image="img:1", labels=None):
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Service",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"template": {"spec": {"containers": [{"image": image}]}}}}


def test_standin_crud_selectors_and_status_objects(api):
    svc = services(api)
    raw = svc._api
    created = raw.create_namespaced_custom_object(GROUP, VERSION, "wren-unit", PLURAL, _body("a", labels={"app": "x", "t": "1"}))
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["resourceVersion"] and meta["namespace"] == "wren-unit"
    raw.create_namespaced_custom_object(GROUP, VERSION, "wren-unit", PLURAL, _body("b", labels={"app": "y"}))
    with pytest.raises(ApiException) as info:
        raw.create_namespaced_custom_object(GROUP, VERSION, "wren-unit", PLURAL, _body("a"))
    assert info.value.status == 409 and '"reason": "AlreadyExists"' in info.value.body
    with pytest.raises(ApiException) as info:
        raw.get_namespaced_custom_object(GROUP, VERSION, "wren-unit", PLURAL, "zzz")
    assert info.value.status == 404 and '"kind": "Status"' in info.value.body and "NotFound" in info.value.body
    with pytest.raises(ApiException) as info:
        raw.create_namespaced_custom_object(GROUP, VERSION, "wren-unit", PLURAL, _body("Bad_Name"))
    assert info.value.status == 422 and "Invalid" in info.value.body

    def names(selector):
        out = raw.list_namespaced_custom_object(GROUP, VERSION, "wren-unit", PLURAL, label_selector=selector)
        return [i["metadata"]["name"] for i in out["items"]]

    assert names("app=x") == ["a"] and names("app!=x") == ["b"] and names("app in (x,y)") == ["a", "b"]
    assert names("t") == ["a"] and names("!t") == ["b"] and names("app notin (x)") == ["b"] and names("") == ["a", "b"]
    assert svc.list("app=y")[0]["metadata"]["name"] == "b"

    patched = svc.patch("a", {"metadata": {"labels": {"t": None, "new": "1"}},
                              "spec": {"template": {"metadata": {"annotations": {"k": "v"}}}}})
    assert patched["metadata"]["labels"] == {"app": "x", "new": "1"} and patched["metadata"]["generation"] == 2
    stale = dict(created, metadata=dict(created["metadata"]))
    with pytest.raises(ApiException) as info:
        raw.replace_namespaced_custom_object(GROUP, VERSION, "wren-unit", PLURAL, "a", stale)
    assert info.value.status == 409 and "Conflict" in info.value.body
    assert svc.delete("a") is True and svc.get("a") is None and svc.delete("a") is False


def test_standin_refuses_a_bad_token(api, tmp_path):
    from wren_backend_knative import KnativeError

    bad = tmp_path / "bad-kubeconfig"
    with open(api.kubeconfig_path) as f:
        bad.write_text(f.read().replace(api.token, "wrong-token"))
    client, ns = load_api_client(KnativeConfig(kubeconfig=str(bad)))
    with pytest.raises(KnativeError, match="401"):
        KnativeServices(client, ns).list()


# -- waiting for Ready --------------------------------------------------------------------------

def test_wait_ready_reports_the_controllers_message(api):
    svc = services(api)
    m = service_manifest("wren-missing-256mb", image="missing:1", runtime="missing:1", memory=256,
                         config=KnativeConfig(), namespace="wren-unit", wren_version="0.1.0", python="3.11")
    svc.apply(m)
    t = time.monotonic()
    with pytest.raises(KnativeNotReadyError) as info:
        svc.wait_ready("wren-missing-256mb", 30)
    assert time.monotonic() - t < 10
    msg = str(info.value)
    assert "failed to become Ready" in msg and "RevisionMissing" in msg and 'Unable to fetch image "missing:1"' in msg


def test_wait_ready_gives_up_at_the_deadline(api):
    api.hang_on_missing_image = True
    svc = services(api)
    m = service_manifest("wren-hang-256mb", image="missing:2", runtime="missing:2", memory=256,
                         config=KnativeConfig(), namespace="wren-unit", wren_version="0.1.0", python="3.11")
    svc.apply(m)
    t = time.monotonic()
    with pytest.raises(KnativeNotReadyError, match=r"did not become Ready within 1\.5 s .*pulling image") as info:
        svc.wait_ready("wren-hang-256mb", 1.5)
    assert 1.5 <= time.monotonic() - t < 4 and info.value.reason == "Timeout"


def test_apply_is_idempotent_and_updates_on_change(api):
    svc = services(api)
    kw = dict(image="img:1", runtime="img:1", memory=256, namespace="wren-unit", wren_version="0.1.0", python="3.11")
    m1 = service_manifest("wren-img-256mb", config=KnativeConfig(), **kw)
    first, changed = svc.apply(m1)
    assert changed and first["metadata"]["generation"] == 1
    again, changed = svc.apply(m1)
    assert not changed
    m2 = service_manifest("wren-img-256mb", config=KnativeConfig(container_concurrency=8, min_scale=1), **kw)
    updated, changed = svc.apply(m2)
    assert changed and updated["metadata"]["generation"] == 2
    assert updated["spec"]["template"]["spec"]["containerConcurrency"] == 8
    ready = svc.wait_ready("wren-img-256mb", 10)
    assert ready["status"]["latestReadyRevisionName"] == "wren-img-256mb-00002"
