"""Echo app: returns the payload, through the same runtime (interceptors and all) as every
service, so benchmark ratios isolate the cost of the service's own work."""

from __future__ import annotations

from typing import Any

from grpc import aio

from services.runtime.app import StaticApp
from services.runtime.config import ServerSettings
from shoptwin.v1 import echo_pb2, echo_pb2_grpc


class EchoServicer(echo_pb2_grpc.EchoServiceServicer):
    async def Echo(
        self, request: echo_pb2.EchoRequest, context: aio.ServicerContext[Any, Any]
    ) -> echo_pb2.EchoResponse:
        return echo_pb2.EchoResponse(payload=request.payload)


def create_app(settings: ServerSettings, options: Any) -> StaticApp:
    return StaticApp(
        [echo_pb2.DESCRIPTOR.services_by_name["EchoService"].full_name],
        [(echo_pb2_grpc.add_EchoServiceServicer_to_server, EchoServicer())],
    )
