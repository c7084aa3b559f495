"""docker-compose.yml: valid Compose, and every service, command, port, variable, health check
and volume is one the CLI and runtime accept."""

from __future__ import annotations

import re

import pytest

from services.registry import PRODUCT_SERVICES, get_definition
from tests.deploy import manifests as m

CORE = [d.name for d in PRODUCT_SERVICES]
GIB = 1024**3


@pytest.fixture(scope="module")
def compose() -> dict:
    return m.compose()


def memory_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)([kmg]?)b?", str(text).strip().lower())
    assert match, f"unreadable memory size {text!r}"
    return int(match[1]) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match[2]]


def test_compose_file_matches_the_compose_specification(compose: dict) -> None:
    assert m.compose_schema_errors(compose) == []


def test_schema_check_catches_a_bad_compose_file(compose: dict) -> None:
    # The check is real: a misspelt key and a wrong type are both reported.
    broken = {**compose, "services": {**compose["services"]}}
    broken["services"]["telemetry"] = {**compose["services"]["telemetry"], "helthcheck": {}}
    broken["services"]["dispatch"] = {**compose["services"]["dispatch"], "ports": "50053"}
    errors = m.compose_schema_errors(broken)
    assert any("helthcheck" in e for e in errors)
    assert any(e.startswith("services/dispatch/ports") for e in errors)


@pytest.mark.parametrize("name", CORE)
def test_service_command_is_shoptwin_serve(compose: dict, name: str) -> None:
    service = compose["services"][name]
    args = m.parse_command(service["command"])
    assert args.command == "serve"
    assert args.service == name
    assert args.host == "0.0.0.0"


@pytest.mark.parametrize("name", CORE)
def test_service_environment_resolves_to_real_settings(compose: dict, name: str) -> None:
    definition = get_definition(name)
    env = {
        **m.dockerfile_env(m.dockerfile_stages()[-1][1]),
        **compose["services"][name].get("environment", {}),
    }
    settings, _ = m.resolve_service_env(name, env)
    assert settings.port == definition.default_port
    assert settings.metrics_port == definition.default_metrics_port
    assert str(settings.data_dir) == "/data"


def test_service_to_service_targets(compose: dict) -> None:
    _, intent = m.resolve_service_env("intent", compose["services"]["intent"]["environment"])
    _, dispatch = m.resolve_service_env("dispatch", compose["services"]["dispatch"]["environment"])
    assert intent.dispatch_target == "dispatch:50053"  # type: ignore[attr-defined]
    assert dispatch.telemetry_target == "telemetry:50054"  # type: ignore[attr-defined]
    for target in ("dispatch:50053", "telemetry:50054"):
        host, port = target.split(":")
        assert get_definition(host).default_port == int(port)


def test_unknown_variable_is_rejected() -> None:
    with pytest.raises(AssertionError, match="SHOPTWIN_INTENT_DISPATCH_TARGTE"):
        m.resolve_service_env("intent", {"SHOPTWIN_INTENT_DISPATCH_TARGTE": "dispatch:50053"})
    # A variable of another service is not a setting of this one.
    with pytest.raises(AssertionError):
        m.resolve_service_env("telemetry", {"SHOPTWIN_DISPATCH_TELEMETRY_TARGET": "x:1"})


@pytest.mark.parametrize("name", CORE)
def test_ports_are_the_registry_defaults(compose: dict, name: str) -> None:
    definition = get_definition(name)
    service = compose["services"][name]
    assert service["ports"] == [f"{definition.default_port}:{definition.default_port}"]
    assert str(definition.default_metrics_port) in [str(p) for p in service["expose"]]


@pytest.mark.parametrize("name", CORE)
def test_health_check_asks_the_grpc_health_service(compose: dict, name: str) -> None:
    definition = get_definition(name)
    check = compose["services"][name]["healthcheck"]
    assert check["test"][0] == "CMD"
    argv = check["test"][1:]
    args = m.parse_command(argv)
    assert args.command == "health"
    assert args.target == f"127.0.0.1:{definition.default_port}"
    assert args.service == m.grpc_service_name(name)
    # The health call must give up before docker's own timeout does.
    assert float(args.timeout) < float(check["timeout"].rstrip("s"))


def test_core_stack_memory_is_at_most_2_gib(compose: dict) -> None:
    limits = {
        name: memory_bytes(compose["services"][name]["deploy"]["resources"]["limits"]["memory"])
        for name in CORE
    }
    assert sum(limits.values()) <= 2 * GIB, limits
    assert all(limit >= 128 * 1024**2 for limit in limits.values())


@pytest.mark.parametrize("name", CORE)
def test_state_is_on_a_named_volume_of_its_own(compose: dict, name: str) -> None:
    volumes = compose["services"][name]["volumes"]
    assert volumes == [f"{name}-data:/data"]
    assert f"{name}-data" in compose["volumes"]


@pytest.mark.parametrize("name", ["recommendation", "intent"])
def test_default_model_is_trained_on_the_service_volume_first(compose: dict, name: str) -> None:
    trainer = compose["services"][f"{name}-model"]
    assert trainer["command"] == ["shoptwin", "train", name, "--default"]
    assert trainer["volumes"] == compose["services"][name]["volumes"]
    assert trainer["restart"] == "no"
    depends = compose["services"][name]["depends_on"][f"{name}-model"]
    assert depends["condition"] == "service_completed_successfully"
    if not m.train_target_registered(name):
        pytest.skip(f"`shoptwin train {name}` is not in this checkout yet (service issue)")
    args = m.parse_command(trainer["command"])
    assert args.default is True


def test_containers_are_hardened_and_built_from_the_dockerfile(compose: dict) -> None:
    for name in [*CORE, "recommendation-model", "intent-model", "loadgen"]:
        service = compose["services"][name]
        # Each names the build, so compose builds the image instead of trying to pull it.
        assert service["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}, name
        assert service["image"] == compose["services"]["telemetry"]["image"], name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "/tmp" in service["tmpfs"], name


def test_load_generator_is_the_locust_ui_on_the_services(compose: dict) -> None:
    loadgen = compose["services"]["loadgen"]
    command = loadgen["command"]
    assert command[:3] == ["locust", "-f", "/app/loadtests/locustfile.py"]
    assert command[command.index("--web-host") + 1] == "0.0.0.0"
    assert loadgen["ports"] == ["8089:8089"]
    for name in CORE:
        target = loadgen["environment"][f"LOCUST_{name.upper()}_TARGET"]
        assert target == f"{name}:{get_definition(name).default_port}"
        assert loadgen["depends_on"][name]["condition"] == "service_healthy"
    locustfile = m.ROOT / "loadtests" / "locustfile.py"
    if not locustfile.is_file():
        pytest.skip("loadtests/locustfile.py is not in this checkout yet (load-test issue)")


def test_observability_profile(compose: dict) -> None:
    for name in ("prometheus", "grafana"):
        assert compose["services"][name]["profiles"] == ["observability"]
        image = compose["services"][name]["image"]
        assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name} image not pinned: {image}"
    for name in (*CORE, "loadgen"):
        assert "profiles" not in compose["services"][name]
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    grafana = compose["services"]["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro" in grafana
