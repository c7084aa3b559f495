"""Telemetry app: opens the store, starts the writer and background work, wires the servicer."""

from __future__ import annotations

from grpc import aio

from services.runtime.config import ServerSettings
from services.runtime.settings import SettingsError
from services.telemetry.config import TelemetryOptions
from services.telemetry.server import TelemetryServicer
from services.telemetry.service import Telemetry
from shoptwin.v1 import telemetry_pb2, telemetry_pb2_grpc

SERVICE_NAME = telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"].full_name


class TelemetryApp:
    """The :class:`~services.runtime.server.ServiceApp` of the telemetry service."""

    grpc_service_names = (SERVICE_NAME,)

    def __init__(self, settings: ServerSettings, options: TelemetryOptions) -> None:
        self.database = options.database or settings.data_dir / "telemetry.sqlite3"
        self.options = options
        self.telemetry: Telemetry | None = None

    async def start(self) -> None:
        self.telemetry = Telemetry.open(self.database, self.options)
        await self.telemetry.start()

    def register(self, server: aio.Server) -> None:
        assert self.telemetry is not None, "start() first"
        telemetry_pb2_grpc.add_TelemetryServiceServicer_to_server(
            TelemetryServicer(self.telemetry), server
        )

    async def stop(self) -> None:
        if self.telemetry is not None:
            await self.telemetry.stop()
            self.telemetry = None


def create_app(settings: ServerSettings, options: TelemetryOptions) -> TelemetryApp:
    if settings.workers > 1:
        # One writer owns the database and the per-device sequence state.
        raise SettingsError("workers: telemetry runs one process (one writer per database)")
    return TelemetryApp(settings, options)
