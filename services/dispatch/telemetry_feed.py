"""Vehicle positions from the telemetry service's live stream (``WatchLive``).

Convention: a telemetry ``device_id`` equals the dispatch ``vehicle_id``; readings of devices
that are not vehicles of the fleet, or without a position, are ignored. The feed reconnects
with capped exponential backoff (and jitter from a seeded generator) whenever the stream ends
or fails; while telemetry is down, ETAs simply come from the plan and the last known positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import structlog
from grpc import aio

from services.dispatch.problem import GeoPoint, Point
from services.runtime.client import ChannelOptions, create_aio_channel
from services.runtime.errors import DomainError
from shoptwin.v1 import telemetry_pb2, telemetry_pb2_grpc

log = structlog.get_logger("shoptwin.dispatch.telemetry")

PositionSink = Callable[[str, Point, float | None], Awaitable[bool]]


@dataclass(frozen=True)
class FeedSettings:
    target: str
    fleet_id: str = ""
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    seed: int = 0


class TelemetryFeed:
    """Subscribes to WatchLive and hands each vehicle position to ``sink``."""

    def __init__(
        self,
        settings: FeedSettings,
        sink: PositionSink,
        known_vehicle: Callable[[str], bool],
        channel_options: ChannelOptions | None = None,
    ) -> None:
        self.settings = settings
        self._sink = sink
        self._known = known_vehicle
        self._channel_options = channel_options or ChannelOptions(
            retry=None, default_timeout_s=None
        )
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random(settings.seed)
        #: True while a stream is open (observability and tests).
        self.connected = False
        self.readings_applied = 0
        self.connects = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dispatch-telemetry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = self.settings.initial_backoff_s
        channel = create_aio_channel(self.settings.target, self._channel_options)
        stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
        try:
            while True:
                try:
                    call = stub.WatchLive(
                        telemetry_pb2.WatchLiveRequest(fleet_id=self.settings.fleet_id),
                        wait_for_ready=False,
                    )
                    # Telemetry sends headers once the subscription is live; from then on
                    # every stored reading reaches this stream.
                    await call.initial_metadata()
                    self.connected = True
                    self.connects += 1
                    log.info("telemetry stream open", target=self.settings.target)
                    async for reading in call:
                        backoff = self.settings.initial_backoff_s
                        await self._apply(reading)
                    log.info("telemetry stream ended", target=self.settings.target)
                except aio.AioRpcError as exc:
                    level = "debug" if exc.code() == grpc.StatusCode.UNAVAILABLE else "warning"
                    getattr(log, level)(
                        "telemetry stream failed",
                        target=self.settings.target,
                        code=exc.code().name,
                        retry_in_s=round(backoff, 2),
                    )
                self.connected = False
                await asyncio.sleep(backoff * (0.5 + self._rng.random()))
                backoff = min(self.settings.max_backoff_s, backoff * 2)
        finally:
            self.connected = False
            await channel.close(None)

    async def _apply(self, reading: telemetry_pb2.Reading) -> None:
        if not reading.HasField("position") or not self._known(reading.device_id):
            return
        when = reading.time.seconds + reading.time.nanos / 1e9 if reading.HasField("time") else None
        point = GeoPoint(reading.position.latitude, reading.position.longitude)
        try:
            await self._sink(reading.device_id, point, when)
            self.readings_applied += 1
        except DomainError as exc:
            # A plane fleet, an unknown vehicle: the stream goes on.
            log.debug("telemetry reading ignored", device_id=reading.device_id, error=exc.message)
