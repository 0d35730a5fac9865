"""The Helm chart in deploy/helm/agora renders manifests that Kubernetes and the node both accept.

No cluster and no `helm` binary here. The chart is rendered and linted by Helm's own Go SDK
(v4, through the `helm-python-sdk` wheel, which bundles it as a C library), so templates go
through the real engine and its Sprig functions, not a stand-in. Rendered objects are checked
against the Kubernetes OpenAPI schemas of `kubernetes-validate`, and the node config the pods
would see (the ConfigMap plus the StatefulSet's env, pod name filled in as the kubelet does) is
loaded with the node's own `load_settings`. Both tools are test dependencies: without them this
module fails to import, it does not skip.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]  # ships no py.typed
import pytest
import yaml

from node.config import Settings, load_settings

CHART = Path(__file__).resolve().parent.parent / "deploy" / "helm" / "agora"
RELEASE, NAMESPACE = "agora", "ml"
KUBERNETES_VERSION = "1.30"  # oldest minor still in common use; its schemas are the strictest here
LINT_WARNING = 2  # Helm's severities: 1 info, 2 warning, 3 error


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The manifests `helm template agora deploy/helm/agora -n ml` would print, parsed."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = [doc for text in files.values() for doc in yaml.safe_load_all(text) if doc is not None]
    assert all(isinstance(doc, dict) for doc in docs)
    return docs


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (agora,) = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert isinstance(agora, dict)
    return agora


def pod_env(docs: list[dict[str, Any]], pod: str) -> dict[str, str]:
    """The container's literal env for one pod, $(VAR) references expanded as the kubelet does."""
    downward = {"metadata.name": pod, "metadata.namespace": NAMESPACE}
    env: dict[str, str] = {}
    for item in container(docs)["env"]:
        if "valueFrom" in item:
            env[item["name"]] = downward[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
    return env


@pytest.fixture
def pod_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Settings the node in a given pod would run with: the ConfigMap's file plus the pod's env."""

    def settings(docs: list[dict[str, Any]], pod: str) -> Settings:
        config = tmp_path / f"{pod}.yaml"
        config.write_text(one(docs, "ConfigMap")["data"]["node.yaml"])
        for key, value in pod_env(docs, pod).items():
            monkeypatch.setenv(key, value)
        return load_settings(config)

    yield settings


def test_lint_finds_nothing_worse_than_info() -> None:
    for strict in (False, True):
        result = helm.lint(str(CHART), strict=strict, namespace=NAMESPACE)
        assert result["errors"] == []
        assert [m for m in result["messages"] if m["severity"] >= LINT_WARNING] == []


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"serviceMonitor": {"enabled": True}, "gpu": {"count": 1}, "resources": {"limits": {"memory": "4Gi"}}},
    ],
    ids=["defaults", "gpu-and-servicemonitor"],
)
def test_every_object_is_valid_kubernetes(values: dict[str, Any]) -> None:
    docs = render(values)
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: not in the Kubernetes schemas
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_defaults_render_the_core_objects() -> None:
    kinds = sorted(doc["kind"] for doc in render())
    assert kinds == ["ConfigMap", "Service", "StatefulSet"]  # no Secret, no ServiceMonitor unless asked


def test_statefulset_and_headless_service_fit_together() -> None:
    docs = render()
    service, statefulset = one(docs, "Service"), one(docs, "StatefulSet")
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"] == RELEASE
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert statefulset["spec"]["replicas"] == 3
    ports = {port["name"]: port["containerPort"] for port in container(docs)["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9464}
    assert {port["targetPort"] for port in service["spec"]["ports"]} == set(ports)


def test_pods_are_scraped_and_probed_with_agora_health() -> None:
    docs = render()
    statefulset = one(docs, "StatefulSet")
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9464"
    agora = container(docs)
    config_mount = next(m for m in agora["volumeMounts"] if m["name"] == "config")["mountPath"]
    assert agora["command"] == ["agora", "run", "--config", f"{config_mount}/node.yaml"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = agora[probe]["exec"]["command"]
        assert command[:2] == ["agora", "health"], probe
        assert command[command.index("--config") + 1] == f"{config_mount}/node.yaml", probe
        assert command[command.index("--address") + 1] == "127.0.0.1:50051", probe


def test_volumes_data_and_certs() -> None:
    docs = render({"persistence": {"size": "20Gi"}, "certs": {"secretName": "net-certs"}})
    statefulset = one(docs, "StatefulSet")
    mounts = {m["name"]: m["mountPath"] for m in container(docs)["volumeMounts"]}
    assert mounts["data"] == "/data" and mounts["certs"] == "/certs"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["certs"]["secret"]["secretName"] == "net-certs"
    assert volumes["config"]["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]


def test_each_pod_runs_a_valid_node_config_of_its_own(pod_settings: Any) -> None:
    docs = render()
    settings = pod_settings(docs, "agora-1")
    assert settings.node.name == "agora-1"  # the CN of certificate agora-1.crt
    assert settings.node.advertise == "agora-1.agora.ml.svc.cluster.local:50051"
    assert settings.node.listen == "0.0.0.0:50051"
    assert settings.node.roles == ["teacher", "student"]
    assert settings.node.data_dir == Path("/data")
    assert settings.peers.seeds == ["dns:///agora.ml.svc.cluster.local:50051"]
    assert settings.security.insecure is False
    assert settings.security.tls_files(settings.node.data_dir) == (
        Path("/certs/ca.crt"),
        Path("/certs/agora-1.crt"),
        Path("/certs/agora-1.key"),
    )
    assert settings.metrics.listen == "0.0.0.0:9464"
    assert settings.teacher.tasks == ["arithmetic"] and settings.student.task == "arithmetic"
    assert settings.privacy.epsilon_budget == 8.0


def test_values_reach_the_node_config(pod_settings: Any) -> None:
    docs = render(
        {
            "roles": ["student"],
            "task": "word_sorting",
            "model": {"source": "/data/model", "device": "cuda", "dtype": "bfloat16"},
            "privacy": {"epsilonBudget": 2.5},
            "config": {"peers": {"gossip_interval_s": 5}, "student": {"algorithm": "yoda"}},
        }
    )
    settings = pod_settings(docs, "agora-0")
    assert settings.node.roles == ["student"]
    assert settings.teacher.tasks == []  # a student-only node teaches nothing
    assert settings.student.task == "word_sorting" and settings.student.algorithm == "yoda"
    assert (settings.model.source, settings.model.device, settings.model.dtype) == ("/data/model", "cuda", "bfloat16")
    assert settings.privacy.epsilon_budget == 2.5
    assert settings.peers.gossip_interval_s == 5.0
    assert settings.peers.seeds == ["dns:///agora.ml.svc.cluster.local:50051"]  # merged, not replaced


def test_gpu_request() -> None:
    assert "resources" not in container(render())
    resources = container(render({"gpu": {"count": 2}, "resources": {"limits": {"memory": "8Gi"}}}))["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": 2, "memory": "8Gi"}


def test_service_monitor_only_when_enabled() -> None:
    assert not [doc for doc in render() if doc["kind"] == "ServiceMonitor"]
    docs = render({"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}})
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= one(docs, "Service")["metadata"]["labels"].items()


def test_certs_secret_holds_one_certificate_per_pod() -> None:
    nodes = {f"agora-{i}": {"crt": f"CERT {i}\n", "key": f"KEY {i}\n"} for i in range(2)}
    docs = render({"replicaCount": 2, "certs": {"create": True, "ca": "CA\n", "nodes": nodes}})
    secret = one(docs, "Secret")
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert data == {
        "ca.crt": "CA\n",
        "agora-0.crt": "CERT 0\n",
        "agora-0.key": "KEY 0\n",
        "agora-1.crt": "CERT 1\n",
        "agora-1.key": "KEY 1\n",
    }
    volumes = one(docs, "StatefulSet")["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "certs")["secret"]["secretName"] == secret["metadata"]["name"]
    # The files each pod's node reads are keys of the Secret.
    for pod in nodes:
        env = pod_env(docs, pod)
        assert {Path(env["AGORA_SECURITY__CERT"]).name, Path(env["AGORA_SECURITY__KEY"]).name} <= data.keys()


def test_certs_secret_refuses_a_pod_without_a_certificate() -> None:
    nodes = {"agora-0": {"crt": "C", "key": "K"}}
    with pytest.raises(helm.HelmError, match="agora-1"):
        render({"replicaCount": 2, "certs": {"create": True, "ca": "CA", "nodes": nodes}})
