"""Protobuf readings to storage rows and back, with per-reading validation.

This is the servicer's translation layer: it knows the protobuf messages (not gRPC). Decoding
is the hottest Python loop of the service, so it is written for speed: one pass, local names,
range checks written so that NaN fails them (every comparison with NaN is false).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from services.telemetry.model import (
    BATTERY,
    DOOR,
    FLEET,
    HEADING,
    LATITUDE,
    LONGITUDE,
    SPEED,
    TEMPERATURE,
    TIME_MS,
    Bucket,
    FieldStats,
    Rejection,
    Row,
)
from shoptwin.v1 import common_pb2, telemetry_pb2

MAX_ID = 128


def _bad_float(value: float, low: float, high: float) -> str:
    if math.isnan(value):
        return "must be a finite number, got nan"
    return f"must be in {low:g}..{high:g}, got {value:g}"


def _check_reading(r: telemetry_pb2.Reading, now_ms: int, max_future_ms: int) -> tuple[str, str]:
    """The first problem of a reading as (field, reason); ('', '') when it is valid.

    Only called for readings the fast path flagged, so it can afford to be thorough.
    """
    dev = r.device_id
    if not dev:
        return "device_id", "must not be empty"
    if len(dev) > MAX_ID:
        return "device_id", f"must be at most {MAX_ID} characters, got {len(dev)}"
    if not dev.isprintable():
        return "device_id", "must not contain control characters"
    if r.sequence < 1:
        return "sequence", "must be at least 1"
    if not r.HasField("time"):
        return "time", "required"
    t_ms = r.time.seconds * 1000 + r.time.nanos // 1_000_000
    if t_ms <= 0:
        return "time", "must be after 1970-01-01"
    if t_ms > now_ms + max_future_ms:
        return "time", (
            f"more than {max_future_ms // 1000} s in the future of the server clock "
            f"(by {(t_ms - now_ms) / 1000:.1f} s)"
        )
    if len(r.fleet_id) > MAX_ID:
        return "fleet_id", f"must be at most {MAX_ID} characters, got {len(r.fleet_id)}"
    if r.HasField("position"):
        lat, lon = r.position.latitude, r.position.longitude
        if not -90.0 <= lat <= 90.0:
            return "position.latitude", _bad_float(lat, -90, 90)
        if not -180.0 <= lon <= 180.0:
            return "position.longitude", _bad_float(lon, -180, 180)
    for name, low, high in (
        ("speed_mps", 0.0, 100.0),
        ("heading_deg", 0.0, 360.0),
        ("temperature_c", -100.0, 150.0),
        ("battery_pct", 0.0, 100.0),
    ):
        if r.HasField(name):  # type: ignore[arg-type]
            value = getattr(r, name)
            if not low <= value <= high:
                return name, _bad_float(value, low, high)
    return "", ""


def decode_batch(
    readings: Sequence[telemetry_pb2.Reading],
    now_ms: int,
    max_future_ms: int,
    prefix: str = "readings",
) -> tuple[list[Row], list[int] | None, list[Rejection]]:
    """Valid readings as rows, their indices (``None`` when every reading is valid, meaning
    0..n-1) and one rejection per invalid reading naming its field, e.g.
    ``readings[3].position.latitude``."""
    rows: list[Row] = []
    append = rows.append
    limit_ms = now_ms + max_future_ms
    bad_indices: list[int] = []
    has = telemetry_pb2.Reading.HasField
    for i, r in enumerate(readings):
        dev = r.device_id
        ts = r.time
        t_ms = ts.seconds * 1000 + ts.nanos // 1_000_000
        seq = r.sequence
        fleet_id = r.fleet_id
        # An unset optional field reads as its zero value, so presence needs asking only
        # when the value is zero (HasField costs as much as reading the field).
        pos = r.position
        lat: float | None = pos.latitude
        lon: float | None = pos.longitude
        if not lat and not lon and not has(r, "position"):
            lat = lon = None
            ok = True
        else:
            ok = -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0  # type: ignore[operator]
        speed: float | None = r.speed_mps
        if not speed and not has(r, "speed_mps"):
            speed = None
        heading: float | None = r.heading_deg
        if not heading and not has(r, "heading_deg"):
            heading = None
        temp: float | None = r.temperature_c
        if not temp and not has(r, "temperature_c"):
            temp = None
        battery: float | None = r.battery_pct
        if not battery and not has(r, "battery_pct"):
            battery = None
        door: int | None = 1 if r.door_open else (0 if has(r, "door_open") else None)
        if not (
            ok
            and 0 < t_ms <= limit_ms
            and seq >= 1
            and 0 < len(dev) <= MAX_ID
            and (speed is None or 0.0 <= speed <= 100.0)
            and (heading is None or 0.0 <= heading <= 360.0)
            and (temp is None or -100.0 <= temp <= 150.0)
            and (battery is None or 0.0 <= battery <= 100.0)
            and dev.isprintable()
            and len(fleet_id) <= MAX_ID
        ):
            bad_indices.append(i)
            continue
        append((dev, seq, t_ms, fleet_id, lat, lon, speed, heading, temp, battery, door))
    if not bad_indices:
        return rows, None, []
    rejections = []
    for i in bad_indices:
        field, reason = _check_reading(readings[i], now_ms, max_future_ms)
        if not field:  # the fast path and the thorough check disagree: be safe, refuse
            field, reason = "", "invalid reading"
        rejections.append(Rejection(i, f"{prefix}[{i}].{field}".rstrip("."), reason))
    bad = set(bad_indices)
    indices = [i for i in range(len(readings)) if i not in bad]
    return rows, indices, rejections


def row_to_reading(row: Row) -> telemetry_pb2.Reading:
    """The protobuf reading of a stored row."""
    reading = telemetry_pb2.Reading(device_id=row[0], sequence=row[1], fleet_id=row[FLEET])
    t_ms = row[TIME_MS]
    reading.time.seconds, millis = divmod(t_ms, 1000)
    reading.time.nanos = millis * 1_000_000
    if row[LATITUDE] is not None:
        reading.position.latitude = row[LATITUDE]
        reading.position.longitude = row[LONGITUDE]  # type: ignore[assignment]
    if row[SPEED] is not None:
        reading.speed_mps = row[SPEED]
    if row[HEADING] is not None:
        reading.heading_deg = row[HEADING]
    if row[TEMPERATURE] is not None:
        reading.temperature_c = row[TEMPERATURE]
    if row[BATTERY] is not None:
        reading.battery_pct = row[BATTERY]
    if row[DOOR] is not None:
        reading.door_open = bool(row[DOOR])
    return reading


def _stats(stats: FieldStats) -> telemetry_pb2.FieldStats | None:
    if not stats.n:
        return None
    return telemetry_pb2.FieldStats(min=stats.low, max=stats.high, mean=stats.mean)


def bucket_to_proto(bucket: Bucket) -> telemetry_pb2.Bucket:
    """The protobuf bucket of an aggregated one (fields without values stay unset)."""
    message = telemetry_pb2.Bucket(count=bucket.count)
    message.start.seconds, millis = divmod(bucket.start_ms, 1000)
    message.start.nanos = millis * 1_000_000
    if bucket.last_latitude is not None:
        message.last_position.CopyFrom(
            common_pb2.GeoPoint(
                latitude=bucket.last_latitude, longitude=bucket.last_longitude or 0.0
            )
        )
    for name, stats in (
        ("speed_mps", bucket.speed),
        ("temperature_c", bucket.temperature),
        ("battery_pct", bucket.battery),
    ):
        proto = _stats(stats)
        if proto is not None:
            getattr(message, name).CopyFrom(proto)
    return message
