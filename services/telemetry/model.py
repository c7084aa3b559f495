"""Domain types of the telemetry service, independent of gRPC and protobuf.

A stored reading is a plain tuple (:data:`Row`) rather than an object: the ingest path handles
100,000 of them a second in Python, and tuples go straight into ``executemany``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

#: (device_id, sequence, time_ms, fleet_id, latitude, longitude, speed_mps, heading_deg,
#:  temperature_c, battery_pct, door_open); absent optional values are None, door_open is 0/1.
Row = tuple[
    str,
    int,
    int,
    str,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
    int | None,
]

# Positions in a Row (Final, so the type checker knows each position's type).
DEVICE: Final = 0
SEQUENCE: Final = 1
TIME_MS: Final = 2
FLEET: Final = 3
LATITUDE: Final = 4
LONGITUDE: Final = 5
SPEED: Final = 6
HEADING: Final = 7
TEMPERATURE: Final = 8
BATTERY: Final = 9
DOOR: Final = 10

COLUMNS: tuple[str, ...] = (
    "device_id",
    "sequence",
    "time_ms",
    "fleet_id",
    "latitude",
    "longitude",
    "speed_mps",
    "heading_deg",
    "temperature_c",
    "battery_pct",
    "door_open",
)

MAX_BATCH = 5_000
MAX_FUTURE_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class Rejection:
    """One reading refused: its index in the batch, the field path at fault and why."""

    index: int
    field: str
    reason: str


@dataclass(frozen=True)
class BatchResult:
    """What one batch's acknowledgement says, known only after its commit."""

    stored: int
    duplicates: int
    rejected: list[Rejection]
    #: (device_id, acked_sequence) for every device the batch named.
    device_acks: list[tuple[str, int]]


@dataclass
class FieldStats:
    """Count, min, max and sum of one optional field over a bucket."""

    n: int = 0
    low: float = math.inf
    high: float = -math.inf
    total: float = 0.0

    def add(self, value: float | None) -> None:
        if value is None:
            return
        self.n += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def merge(self, other: FieldStats) -> None:
        self.n += other.n
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan


@dataclass
class Bucket:
    """Readings of one device aggregated over [start_ms, start_ms + width_ms)."""

    start_ms: int
    width_ms: int
    count: int = 0
    last_time_ms: int = -1
    last_latitude: float | None = None
    last_longitude: float | None = None
    speed: FieldStats = field(default_factory=FieldStats)
    temperature: FieldStats = field(default_factory=FieldStats)
    battery: FieldStats = field(default_factory=FieldStats)

    def add_row(self, row: Row) -> None:
        """Fold one raw reading in."""
        self.count += 1
        if row[LATITUDE] is not None and row[TIME_MS] >= self.last_time_ms:
            self.last_time_ms = row[TIME_MS]
            self.last_latitude = row[LATITUDE]
            self.last_longitude = row[LONGITUDE]
        self.speed.add(row[SPEED])
        self.temperature.add(row[TEMPERATURE])
        self.battery.add(row[BATTERY])

    def merge(self, other: Bucket) -> None:
        """Fold another bucket (same device, overlapping span) in."""
        self.count += other.count
        if other.last_latitude is not None and other.last_time_ms >= self.last_time_ms:
            self.last_time_ms = other.last_time_ms
            self.last_latitude = other.last_latitude
            self.last_longitude = other.last_longitude
        self.speed.merge(other.speed)
        self.temperature.merge(other.temperature)
        self.battery.merge(other.battery)


def aggregate(rows: list[Row], width_ms: int, start_align_ms: int = 0) -> list[Bucket]:
    """Buckets of ``width_ms`` (aligned to multiples of it) over ``rows``, oldest first."""
    buckets: dict[int, Bucket] = {}
    for row in rows:
        start = (row[TIME_MS] - start_align_ms) // width_ms * width_ms + start_align_ms
        bucket = buckets.get(start)
        if bucket is None:
            bucket = buckets[start] = Bucket(start, width_ms)
        bucket.add_row(row)
    return [buckets[key] for key in sorted(buckets)]


def rebucket(buckets: list[Bucket], width_ms: int) -> list[Bucket]:
    """Merge ``buckets`` into buckets of ``width_ms`` (a coarser one keeps its own start)."""
    merged: dict[int, Bucket] = {}
    for bucket in buckets:
        if bucket.width_ms >= width_ms:
            start, width = bucket.start_ms, bucket.width_ms
        else:
            start, width = bucket.start_ms // width_ms * width_ms, width_ms
        target = merged.get(start)
        if target is None:
            target = merged[start] = Bucket(start, width)
        target.merge(bucket)
    return [merged[key] for key in sorted(merged)]


@dataclass(frozen=True)
class DeviceRecord:
    """A device as the store remembers it between restarts."""

    device_id: str
    fleet_id: str
    acked_sequence: int
    latest: Row | None
