"""Behaviour-model objects (plain types, simulated seconds) to ``shoptwin.v1`` messages.

Simulated times are seconds since midnight of the simulated day 0; a run maps them to the wall
clock with its ``clock_base_s`` (see :class:`SimClock`), so the same seed and clock base give
byte-identical requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from shoptwin.v1 import common_pb2, dispatch_pb2, telemetry_pb2
from simulator.behaviour import GeoFrame, OrderSpec, Point, TelemetryReading, VehicleSpec


@dataclass(frozen=True)
class SimClock:
    """Maps simulated seconds to wall-clock time: simulated day 0 starts at the UTC midnight
    before ``clock_base_s``, and a run starts at the time of day of ``clock_base_s``."""

    clock_base_s: float

    @property
    def day_start_s(self) -> float:
        return math.floor(self.clock_base_s / 86_400.0) * 86_400.0

    @property
    def start_of_run_s(self) -> float:
        """Simulated time (seconds since midnight of day 0) at which the run starts."""
        return self.clock_base_s - self.day_start_s

    def wall(self, sim_s: float) -> float:
        return self.day_start_s + sim_s

    def timestamp(self, sim_s: float) -> Timestamp:
        stamp = Timestamp()
        wall = self.wall(sim_s)
        stamp.seconds = math.floor(wall)
        stamp.nanos = round((wall - math.floor(wall)) * 1e9) % 1_000_000_000
        return stamp


def geo_location(frame: GeoFrame, point: Point) -> common_pb2.Location:
    latitude, longitude = frame.to_geo(point)
    return common_pb2.Location(geo=common_pb2.GeoPoint(latitude=latitude, longitude=longitude))


def window(clock: SimClock, start_s: float, end_s: float) -> common_pb2.TimeWindow:
    return common_pb2.TimeWindow(start=clock.timestamp(start_s), end=clock.timestamp(end_s))


def order_message(
    order: OrderSpec, frame: GeoFrame, clock: SimClock, order_id: str | None = None
) -> dispatch_pb2.Order:
    """A dispatch ``Order`` of a behaviour-model order."""
    return dispatch_pb2.Order(
        order_id=order_id or order.order_id,
        location=geo_location(frame, order.location),
        demand=order.demand,
        window=window(clock, order.window_start_s, order.window_end_s),
        service_time=Duration(seconds=round(order.service_time_s)),
    )


def depot(frame: GeoFrame, clock: SimClock, hours_s: float = 3 * 86_400.0) -> dispatch_pb2.Depot:
    """The depot at the frame's origin, open from an hour before the run for ``hours_s``."""
    start = clock.start_of_run_s - 3600.0
    return dispatch_pb2.Depot(
        location=geo_location(frame, Point(0.0, 0.0)),
        hours=window(clock, start, start + hours_s),
    )


def vehicle_message(spec: VehicleSpec, vehicle_id: str) -> dispatch_pb2.Vehicle:
    return dispatch_pb2.Vehicle(vehicle_id=vehicle_id, capacity=spec.capacity)


def reading_message(
    reading: TelemetryReading, time: Timestamp, device_id: str, fleet_id: str
) -> telemetry_pb2.Reading:
    """A telemetry ``Reading`` of a van's reading (device and fleet ids carry the run's tag)."""
    message = telemetry_pb2.Reading(
        device_id=device_id,
        sequence=reading.sequence,
        time=time,
        fleet_id=fleet_id,
        position=common_pb2.GeoPoint(latitude=reading.latitude, longitude=reading.longitude),
        speed_mps=reading.speed_mps,
        heading_deg=reading.heading_deg,
        battery_pct=reading.battery_pct,
        door_open=reading.door_open,
    )
    if reading.temperature_c is not None:
        message.temperature_c = reading.temperature_c
    return message


def readings_batch(
    batch_id: int,
    readings: Sequence[TelemetryReading],
    clock: SimClock,
    device_id: str,
    speedup: float = 1.0,
    *,
    fleet_id: str,
) -> telemetry_pb2.UploadRequest:
    """One upload batch. With ``speedup`` > 1 the van moves that many times faster than the
    wall clock, and its timestamps are compressed by the same factor so they never run ahead
    of the server's clock."""
    start = clock.start_of_run_s
    return telemetry_pb2.UploadRequest(
        batch_id=batch_id,
        readings=[
            reading_message(
                r, clock.timestamp(start + (r.time_s - start) / speedup), device_id, fleet_id
            )
            for r in readings
        ],
    )
