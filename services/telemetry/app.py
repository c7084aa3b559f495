"""Telemetry app: wires the servicer to the runtime.

Until the service's own issue lands, every RPC answers UNIMPLEMENTED (the generated base
servicer), never a fake result.
"""

from __future__ import annotations

from services.runtime.app import StaticApp
from services.runtime.config import ServerSettings
from services.telemetry.config import TelemetryOptions
from shoptwin.v1 import telemetry_pb2, telemetry_pb2_grpc

SERVICE_NAME = telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"].full_name


def create_app(settings: ServerSettings, options: TelemetryOptions) -> StaticApp:
    return StaticApp(
        [SERVICE_NAME],
        [
            (
                telemetry_pb2_grpc.add_TelemetryServiceServicer_to_server,
                telemetry_pb2_grpc.TelemetryServiceServicer(),  # type: ignore[abstract]
            )
        ],
    )
