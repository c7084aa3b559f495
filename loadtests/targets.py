"""The gRPC services a load test can call: stub class, proto descriptor and every RPC name.

A request's Locust name is ``<Service>/<Method>`` (``RecommendationService/GetModelInfo``):
the method without the package, unique across services (``GetModelInfo`` exists twice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from shoptwin.v1 import (
    dispatch_pb2,
    dispatch_pb2_grpc,
    echo_pb2,
    echo_pb2_grpc,
    intent_pb2,
    intent_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
    telemetry_pb2,
    telemetry_pb2_grpc,
)


@dataclass(frozen=True)
class ServiceSpec:
    """One service: its name in ``shoptwin serve``, stub class and descriptor."""

    name: str
    stub_type: Callable[[Any], Any]
    descriptor: ServiceDescriptor

    @property
    def short_name(self) -> str:
        """``RecommendationService``: the service without its package."""
        return str(self.descriptor.name)

    def methods(self) -> list[str]:
        """Every RPC of the service, in .proto order."""
        return [method.name for method in self.descriptor.methods]

    def rpc_name(self, method: str) -> str:
        """The name a call is reported under in Locust's statistics."""
        if method not in self.descriptor.methods_by_name:
            raise KeyError(f"{self.short_name} has no RPC {method!r}")
        return f"{self.short_name}/{method}"

    def response_type(self, method: str) -> type[Message]:
        """The protobuf class of ``method``'s response."""
        return GetMessageClass(self.descriptor.methods_by_name[method].output_type)

    def streaming(self, method: str) -> tuple[bool, bool]:
        """(client streaming, server streaming) of ``method``."""
        desc = self.descriptor.methods_by_name[method]
        return bool(desc.client_streaming), bool(desc.server_streaming)


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec(
            "echo",
            echo_pb2_grpc.EchoServiceStub,
            echo_pb2.DESCRIPTOR.services_by_name["EchoService"],
        ),
        ServiceSpec(
            "recommendation",
            recommendation_pb2_grpc.RecommendationServiceStub,
            recommendation_pb2.DESCRIPTOR.services_by_name["RecommendationService"],
        ),
        ServiceSpec(
            "intent",
            intent_pb2_grpc.IntentServiceStub,
            intent_pb2.DESCRIPTOR.services_by_name["IntentService"],
        ),
        ServiceSpec(
            "dispatch",
            dispatch_pb2_grpc.DispatchServiceStub,
            dispatch_pb2.DESCRIPTOR.services_by_name["DispatchService"],
        ),
        ServiceSpec(
            "telemetry",
            telemetry_pb2_grpc.TelemetryServiceStub,
            telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"],
        ),
    )
}

PRODUCT_SERVICE_NAMES: tuple[str, ...] = ("recommendation", "intent", "dispatch", "telemetry")


def all_rpc_names(services: tuple[str, ...] = PRODUCT_SERVICE_NAMES) -> list[str]:
    """Every RPC of ``services`` as reported in Locust's statistics."""
    return [SERVICES[s].rpc_name(m) for s in services for m in SERVICES[s].methods()]
