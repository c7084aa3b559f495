"""A test app on the EchoService contract whose payload selects a behaviour, so the runtime's
interceptors can be exercised without any product service: b"invalid" raises a
ValidationError, b"missing" a NotFoundError, b"boom" an unexpected error, b"slow:<s>" sleeps,
b"flaky:<key>:<n>" answers UNAVAILABLE the first n times it sees <key>."""

from __future__ import annotations

import asyncio
from typing import Any

from grpc import aio

from services.runtime.app import StaticApp
from services.runtime.config import ServerSettings
from services.runtime.errors import NotFoundError, UnavailableError, ValidationError
from services.runtime.server import ServiceDefinition
from shoptwin.v1 import echo_pb2, echo_pb2_grpc

PROBE = ServiceDefinition(
    name="probe",
    default_port=0,
    default_metrics_port=0,
    factory="tests.runtime.probe_app:create_app",
)


class ProbeServicer(echo_pb2_grpc.EchoServiceServicer):
    def __init__(self) -> None:
        self.attempts: dict[bytes, int] = {}

    async def Echo(
        self, request: echo_pb2.EchoRequest, context: aio.ServicerContext[Any, Any]
    ) -> echo_pb2.EchoResponse:
        payload = request.payload
        if payload == b"invalid":
            raise ValidationError("payload", "must not be 'invalid'")
        if payload == b"missing":
            raise NotFoundError("item 'missing' not found")
        if payload == b"boom":
            raise RuntimeError("unexpected failure")
        if payload.startswith(b"flaky:"):
            _, key, failures = payload.split(b":")
            self.attempts[key] = self.attempts.get(key, 0) + 1
            if self.attempts[key] <= int(failures):
                raise UnavailableError(f"attempt {self.attempts[key]} fails on purpose")
        if payload.startswith(b"slow:"):
            await asyncio.sleep(float(payload[5:]))
        return echo_pb2.EchoResponse(payload=payload)


def create_app(settings: ServerSettings, options: Any) -> StaticApp:
    return StaticApp(
        [echo_pb2.DESCRIPTOR.services_by_name["EchoService"].full_name],
        [(echo_pb2_grpc.add_EchoServiceServicer_to_server, ProbeServicer())],
    )
