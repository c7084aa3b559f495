"""The services ShopTwin runs, their default ports and how to build each one."""

from __future__ import annotations

from services.runtime.server import ServiceDefinition

#: The four product services, in the order `shoptwin up` starts them (dependencies first:
#: dispatch reads telemetry, intent calls dispatch).
PRODUCT_SERVICES: tuple[ServiceDefinition, ...] = (
    ServiceDefinition(
        name="telemetry",
        default_port=50054,
        default_metrics_port=9104,
        factory="services.telemetry.app:create_app",
        options="services.telemetry.config:TelemetryOptions",
        description="IoT ingestion, storage, live streams and alerts",
    ),
    ServiceDefinition(
        name="dispatch",
        default_port=50053,
        default_metrics_port=9103,
        factory="services.dispatch.app:create_app",
        options="services.dispatch.config:DispatchOptions",
        upstreams={"telemetry_target": "telemetry"},
        description="orders to vehicles, routes with time windows, live re-planning",
    ),
    ServiceDefinition(
        name="intent",
        default_port=50052,
        default_metrics_port=9102,
        factory="services.intent.app:create_app",
        options="services.intent.config:IntentOptions",
        upstreams={"dispatch_target": "dispatch"},
        prepare="services.intent.defaults:ensure_default_model",
        description="customer-service messages to intents, entities and next actions",
    ),
    ServiceDefinition(
        name="recommendation",
        default_port=50051,
        default_metrics_port=9101,
        factory="services.recommendation.app:create_app",
        options="services.recommendation.config:RecommendationOptions",
        prepare="services.recommendation.defaults:ensure_default_model",
        description="top-K items for a shopper, learning from feedback events",
    ),
)

#: The bare echo service that benchmarks measure beside the real RPCs.
ECHO = ServiceDefinition(
    name="echo",
    default_port=50050,
    default_metrics_port=9100,
    factory="services.echo.app:create_app",
    description="bare echo RPC, the baseline of every benchmark",
)

ALL_SERVICES: dict[str, ServiceDefinition] = {d.name: d for d in (*PRODUCT_SERVICES, ECHO)}


def get_definition(name: str) -> ServiceDefinition:
    """The definition of service ``name``; ``KeyError`` names the known ones."""
    try:
        return ALL_SERVICES[name]
    except KeyError:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(ALL_SERVICES)}") from None
