"""Loading the deployment files and checking them against what the CLI and runtime accept.

There is no Docker engine or cluster here, so the checks are static: schemas from packages
(check-jsonschema's vendored Compose Specification, kubernetes-validate's Kubernetes schemas), a
small renderer for the kustomize features the manifests use (resources, namespace, JSON 6902
patches), and the project's own parser and settings resolution for every command and variable.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from services.cli.main import build_parser
from services.cli.serve import service_defaults
from services.registry import get_definition
from services.runtime.config import ServerSettings
from services.runtime.settings import ENV_PREFIX, env_names, resolve

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S_DIR = ROOT / "deploy" / "k8s"
TLS_OVERLAY = K8S_DIR / "overlays" / "tls"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"

#: gRPC service names by ShopTwin service, from the contracts.
PROTO_MODULES = {
    "recommendation": ("shoptwin.v1.recommendation_pb2", "RecommendationService"),
    "intent": ("shoptwin.v1.intent_pb2", "IntentService"),
    "dispatch": ("shoptwin.v1.dispatch_pb2", "DispatchService"),
    "telemetry": ("shoptwin.v1.telemetry_pb2", "TelemetryService"),
}


def grpc_service_name(service: str) -> str:
    """The fully qualified gRPC name of ``service`` as its .proto declares it."""
    import importlib

    module_name, short = PROTO_MODULES[service]
    module = importlib.import_module(module_name)
    return str(module.DESCRIPTOR.services_by_name[short].full_name)


# --------------------------------------------------------------------------------------------
# Schemas


@cache
def compose_schema() -> dict[str, Any]:
    """The Compose Specification schema that check-jsonschema vendors (Apache-2.0)."""
    ref = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    return dict(json.loads(ref.read_text(encoding="utf-8")))


def compose_schema_errors(document: Mapping[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(compose_schema())
    return [
        f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def kubernetes_schema_error(document: Mapping[str, Any], version: str) -> str | None:
    """``None`` when ``document`` is valid for Kubernetes ``version`` (strict: no unknown
    fields), else the message."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(dict(document), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        return f"{document['kind']}/{document['metadata']['name']} {path}: {exc.message}"
    return None


# --------------------------------------------------------------------------------------------
# Files


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def compose() -> dict[str, Any]:
    return dict(load_yaml(COMPOSE_FILE))


def render_kustomization(directory: Path) -> list[dict[str, Any]]:
    """The resources of a kustomization with its namespace and JSON 6902 patches applied.

    Only what these manifests use is supported; anything else fails loudly, so a new kustomize
    feature cannot slip past the checks unrendered.
    """
    kustomization = load_yaml(directory / "kustomization.yaml")
    supported = {"apiVersion", "kind", "namespace", "resources", "patches", "images"}
    unknown = set(kustomization) - supported
    if unknown:
        raise ValueError(f"{directory}: kustomization fields not rendered by the tests: {unknown}")
    documents: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            documents.extend(render_kustomization(path))
        else:
            documents.extend(load_yaml_documents(path))
    namespace = kustomization.get("namespace")
    if namespace:
        for doc in documents:
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = namespace
    for patch in kustomization.get("patches", []):
        operations = load_yaml(directory / patch["path"])
        matched = [doc for doc in documents if _matches(doc, patch["target"])]
        if not matched:
            raise ValueError(f"{directory}: patch {patch['path']} matches no resource")
        for doc in matched:
            apply_json_patch(doc, operations)
    return documents


def _matches(doc: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    if "group" in target and target["group"] != group:
        return False
    if "version" in target and target["version"] != version:
        return False
    if "kind" in target and target["kind"] != doc["kind"]:
        return False
    if "name" in target and target["name"] != doc["metadata"]["name"]:
        return False
    if "labelSelector" in target:
        labels = doc["metadata"].get("labels", {})
        for term in target["labelSelector"].split(","):
            key, _, value = term.partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
    return True


def apply_json_patch(doc: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    """Apply RFC 6902 ``add`` and ``replace`` operations in place."""
    for op in operations:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"][1:].split("/")
        ]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        value = copy.deepcopy(op["value"])
        if op["op"] == "add":
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else int(last), value)
            else:
                node[last] = value
        elif op["op"] == "replace":
            if isinstance(node, list):
                node[int(last)] = value
            elif last not in node:
                raise KeyError(f"replace {op['path']}: nothing there to replace")
            else:
                node[last] = value
        else:
            raise ValueError(f"JSON patch op {op['op']!r} not rendered by the tests")


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"])


def workloads(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for doc in documents
        if doc["kind"] in ("Deployment", "StatefulSet")
    }


def containers(workload: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def k8s_env(container: Mapping[str, Any]) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        if "value" not in item:
            raise ValueError(f"{container['name']}: env {item['name']} must be a plain value")
        env[item["name"]] = str(item["value"])
    return env


# --------------------------------------------------------------------------------------------
# Commands and settings


def parse_command(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` (which must start with ``shoptwin``) with the real CLI parser.

    argparse exits on a bad command line; that becomes an ``AssertionError`` naming it.
    """
    assert argv and argv[0] == "shoptwin", f"not a shoptwin command: {argv}"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        raise AssertionError(f"`{' '.join(argv)}` does not parse (exit {exc.code})") from None


def train_target_registered(target: str) -> bool:
    """Whether ``shoptwin train TARGET`` exists in this checkout (the service issue adds it)."""
    parser = build_parser()
    top = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = top.choices["train"]
    group = next(a for a in train._actions if isinstance(a, argparse._SubParsersAction))
    return target in group.choices


def setting_env_names(service: str) -> dict[str, str]:
    """Every ``SHOPTWIN_*`` name ``shoptwin serve SERVICE`` reads, mapped to its setting, by the
    naming rules of services/runtime/settings.py."""
    definition = get_definition(service)
    names: dict[str, str] = {}
    for cls in (ServerSettings, definition.load_options_type()):
        for field in dataclasses.fields(cls):
            for name in env_names(field.name, service):
                names[name] = field.name
    return names


TLS_FIELDS = (
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "upstream_tls_ca",
    "upstream_tls_cert",
    "upstream_tls_key",
)


def resolve_service_env(service: str, env: Mapping[str, str]) -> tuple[ServerSettings, object]:
    """Resolve the service's settings from ``env`` exactly as ``shoptwin serve`` would.

    Unknown ``SHOPTWIN_*`` names fail (the runtime would silently ignore them). TLS file paths
    are left out of the resolution because the files exist only inside the container; callers
    check those paths against the mounted Secret.
    """
    known = setting_env_names(service)
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
    assert not unknown, f"{service}: {unknown} are not settings of `shoptwin serve {service}`"
    plain = {k: v for k, v in env.items() if known.get(k) not in TLS_FIELDS}
    definition = get_definition(service)
    settings = resolve(
        ServerSettings, section=service, env=plain, overrides=service_defaults(definition)
    )
    options = resolve(definition.load_options_type(), section=service, env=plain)
    return settings, options


def dockerfile_stages() -> list[tuple[str, list[str]]]:
    """(FROM line, instruction lines) per stage, continuation lines joined."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append((line, []))
        elif stages:
            stages[-1][1].append(line)
    return stages


def dockerfile_args() -> dict[str, str]:
    args = {}
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if raw.startswith("ARG ") and "=" in raw:
            name, _, value = raw[4:].partition("=")
            args[name.strip()] = value.strip()
    return args


def dockerfile_env(instructions: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in instructions:
        if line.upper().startswith("ENV "):
            for pair in line[4:].split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env
