"""deploy/k8s: valid Kubernetes objects (base and TLS overlay), and every command, port,
probe and variable is one the CLI and runtime accept."""

from __future__ import annotations

import copy

import pytest

from services.registry import PRODUCT_SERVICES, get_definition
from tests.deploy import manifests as m

CORE = [d.name for d in PRODUCT_SERVICES]
#: Oldest release checked (gRPC probes GA since 1.27; the oldest upstream-supported minors at
#: the time of writing are around 1.30) and the newest the package ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
NAMESPACE = "shoptwin"
TLS_DIR = "/etc/shoptwin/tls"


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return m.render_kustomization(m.K8S_DIR)


@pytest.fixture(scope="module")
def tls() -> list[dict]:
    return m.render_kustomization(m.TLS_OVERLAY)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(m.load_yaml(m.K8S_DIR / "kustomization.yaml")["resources"])
    on_disk = {p.name for p in m.K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", ["base", "tls"])
def test_manifests_match_the_kubernetes_schemas(
    base: list[dict], tls: list[dict], variant: str, version: str
) -> None:
    documents = base if variant == "base" else tls
    errors = [m.kubernetes_schema_error(doc, version) for doc in documents]
    assert [e for e in errors if e] == []


def test_schema_check_catches_a_bad_manifest(base: list[dict]) -> None:
    workload = copy.deepcopy(m.workloads(base)["intent"])
    workload["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1
    assert m.kubernetes_schema_error(workload, K8S_VERSIONS[0]) is not None
    workload = copy.deepcopy(m.workloads(base)["intent"])
    workload["spec"]["replicas"] = "two"
    assert m.kubernetes_schema_error(workload, K8S_VERSIONS[0]) is not None


def test_everything_is_in_the_namespace(base: list[dict]) -> None:
    for doc in base:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
    # The files carry the namespace themselves too, for `kubectl apply -f`.
    for path in m.K8S_DIR.glob("*.yaml"):
        if path.name == "kustomization.yaml":
            continue
        for doc in m.load_yaml_documents(path):
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == NAMESPACE, (path.name, doc["kind"])


@pytest.mark.parametrize("variant", ["base", "tls"])
@pytest.mark.parametrize("name", CORE)
def test_workload_command_ports_and_settings(
    base: list[dict], tls: list[dict], variant: str, name: str
) -> None:
    definition = get_definition(name)
    workload = m.workloads(base if variant == "base" else tls)[name]
    server = m.pod_spec(workload)["containers"][0]
    args = m.parse_command(server["command"])
    assert (args.command, args.service, args.host) == ("serve", name, "0.0.0.0")
    env = m.k8s_env(server)
    settings, _ = m.resolve_service_env(name, env)
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"grpc": settings.port, "metrics": settings.metrics_port}
    assert settings.port == definition.default_port
    assert settings.metrics_port == definition.default_metrics_port
    mounts = {v["mountPath"]: v["name"] for v in server["volumeMounts"]}
    assert mounts[str(settings.data_dir)] == "data"
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.metrics_port)
    if variant == "tls":
        assert env["SHOPTWIN_TLS_CERT"] == f"{TLS_DIR}/tls.crt"
        assert env["SHOPTWIN_TLS_KEY"] == f"{TLS_DIR}/tls.key"
        assert env["SHOPTWIN_UPSTREAM_TLS_CA"] == f"{TLS_DIR}/ca.crt"
        assert mounts[TLS_DIR] == "tls"
        secret = next(v for v in m.pod_spec(workload)["volumes"] if v["name"] == "tls")
        assert secret["secret"]["secretName"] == "shoptwin-tls"
    else:
        assert not any("TLS" in key for key in env)


@pytest.mark.parametrize("name", CORE)
def test_native_grpc_probes_target_the_grpc_port(base: list[dict], name: str) -> None:
    server = m.pod_spec(m.workloads(base)[name])["containers"][0]
    port = get_definition(name).default_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"]["port"] == port, probe
    assert server["readinessProbe"]["grpc"]["service"] == m.grpc_service_name(name)


@pytest.mark.parametrize("name", CORE)
def test_tls_probes_run_shoptwin_health_with_the_ca(tls: list[dict], name: str) -> None:
    server = m.pod_spec(m.workloads(tls)[name])["containers"][0]
    port = get_definition(name).default_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "grpc" not in server[probe]
        args = m.parse_command(server[probe]["exec"]["command"])
        assert args.command == "health"
        assert args.target == f"127.0.0.1:{port}"
        assert str(args.tls_ca) == f"{TLS_DIR}/ca.crt"
        assert float(args.timeout) < server[probe]["timeoutSeconds"]
    ready = m.parse_command(server["readinessProbe"]["exec"]["command"])
    assert ready.service == m.grpc_service_name(name)


@pytest.mark.parametrize("name", CORE)
def test_headless_service_per_workload(base: list[dict], name: str) -> None:
    definition = get_definition(name)
    service = next(d for d in base if d["kind"] == "Service" and d["metadata"]["name"] == name)
    assert service["spec"]["clusterIP"] == "None"
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"grpc": definition.default_port, "metrics": definition.default_metrics_port}
    labels = m.workloads(base)[name]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_service_to_service_targets_use_dns_round_robin(base: list[dict]) -> None:
    services = {d["metadata"]["name"]: d for d in base if d["kind"] == "Service"}
    found = {}
    for caller, option in (("intent", "dispatch_target"), ("dispatch", "telemetry_target")):
        env = m.k8s_env(m.pod_spec(m.workloads(base)[caller])["containers"][0])
        _, options = m.resolve_service_env(caller, env)
        target = getattr(options, option)
        assert target.startswith("dns:///"), target
        host, port = target.removeprefix("dns:///").rsplit(":", 1)
        name, namespace, rest = host.split(".", 2)
        assert (namespace, rest) == (NAMESPACE, "svc.cluster.local")
        assert services[name]["spec"]["clusterIP"] == "None"
        assert int(port) == get_definition(name).default_port
        found[caller] = name
    assert found == {"intent": "dispatch", "dispatch": "telemetry"}


def test_stateless_services_scale_with_an_hpa(base: list[dict]) -> None:
    hpas = {d["metadata"]["name"]: d for d in base if d["kind"] == "HorizontalPodAutoscaler"}
    assert set(hpas) == {"recommendation", "intent"}
    for name, hpa in hpas.items():
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) == ("Deployment", name)
        assert m.workloads(base)[name]["kind"] == "Deployment"
        assert 1 < hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("name", ["telemetry", "dispatch"])
def test_stateful_services_keep_state_on_a_volume_claim(base: list[dict], name: str) -> None:
    workload = m.workloads(base)[name]
    assert workload["kind"] == "StatefulSet"
    assert workload["spec"]["serviceName"] == name
    # SQLite has one writer: more replicas would be separate databases, not a bigger one.
    assert workload["spec"]["replicas"] == 1
    claims = {c["metadata"]["name"] for c in workload["spec"]["volumeClaimTemplates"]}
    assert "data" in claims
    assert "data" not in {v["name"] for v in m.pod_spec(workload)["volumes"]}


@pytest.mark.parametrize("name", ["recommendation", "intent"])
def test_default_model_init_container(base: list[dict], name: str) -> None:
    init = m.pod_spec(m.workloads(base)[name])["initContainers"]
    assert [c["command"] for c in init] == [["shoptwin", "train", name, "--default"]]
    env = m.k8s_env(init[0])
    settings, _ = m.resolve_service_env(name, env)
    server = m.pod_spec(m.workloads(base)[name])["containers"][0]
    server_settings, _ = m.resolve_service_env(name, m.k8s_env(server))
    assert settings.data_dir == server_settings.data_dir
    assert {v["mountPath"] for v in init[0]["volumeMounts"]} >= {str(settings.data_dir)}
    if not m.train_target_registered(name):
        pytest.skip(f"`shoptwin train {name}` is not in this checkout yet (service issue)")
    assert m.parse_command(init[0]["command"]).default is True


@pytest.mark.parametrize("name", CORE)
def test_pods_are_hardened_with_resources(base: list[dict], name: str) -> None:
    workload = m.workloads(base)[name]
    pod = m.pod_spec(workload)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in m.containers(workload):
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), container["name"]
        # With a read-only root, /tmp and /data must be volumes.
        mounts = {v["mountPath"]: v["name"] for v in container["volumeMounts"]}
        assert "tmp" in volumes and mounts["/tmp"] == "tmp"
        assert "/data" in mounts
