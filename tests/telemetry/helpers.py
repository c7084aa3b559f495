"""Builders shared by the telemetry tests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.telemetry.config import TelemetryOptions
from services.telemetry.model import Row
from services.telemetry.service import Telemetry
from shoptwin.v1 import telemetry_pb2

NOW_S = int(time.time())
LONDON = (51.5074, -0.1278)


def row(
    device_id: str,
    sequence: int,
    time_ms: int | None = None,
    *,
    fleet_id: str = "",
    lat: float | None = LONDON[0],
    lon: float | None = LONDON[1],
    speed: float | None = None,
    temperature: float | None = None,
) -> Row:
    """A stored-row tuple; time defaults to one reading a second ending now."""
    t = time_ms if time_ms is not None else (NOW_S - 10_000 + sequence) * 1000
    return (device_id, sequence, t, fleet_id, lat, lon, speed, None, temperature, None, None)


def reading(
    device_id: str,
    sequence: int,
    *,
    seconds: int | None = None,
    fleet_id: str = "",
    lat: float = LONDON[0],
    lon: float = LONDON[1],
    temperature: float | None = None,
    **fields: Any,
) -> telemetry_pb2.Reading:
    """A protobuf reading with a position; time defaults to one reading a second ending now."""
    r = telemetry_pb2.Reading(device_id=device_id, sequence=sequence, fleet_id=fleet_id, **fields)
    r.time.seconds = seconds if seconds is not None else NOW_S - 10_000 + sequence
    r.position.latitude = lat
    r.position.longitude = lon
    if temperature is not None:
        r.temperature_c = temperature
    return r


def batch(batch_id: int, readings: Iterable[telemetry_pb2.Reading]) -> telemetry_pb2.UploadRequest:
    return telemetry_pb2.UploadRequest(batch_id=batch_id, readings=list(readings))


def options(tmp_path: Path, **overrides: Any) -> TelemetryOptions:
    """Options on a database under ``tmp_path``; alerts off unless asked for."""
    base = TelemetryOptions(database=tmp_path / "telemetry.sqlite3", alerts_enabled=False)
    return replace(base, **overrides)


@asynccontextmanager
async def open_telemetry(tmp_path: Path, **overrides: Any) -> AsyncIterator[Telemetry]:
    """The domain service on a fresh (or existing) database, without background tasks."""
    opts = options(tmp_path, **overrides)
    assert opts.database is not None
    telemetry = Telemetry.open(opts.database, opts)
    await telemetry.start(background=False)
    try:
        yield telemetry
    finally:
        await telemetry.stop()


async def ingest(telemetry: Telemetry, rows: list[Row]) -> Any:
    """Submit rows as one batch and wait for its result."""
    future = await telemetry.submit(rows, None, [])
    return await future
