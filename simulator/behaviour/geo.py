"""Local plane coordinates (metres east/north of the depot) and their WGS 84 equivalents."""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True)
class Point:
    """Metres east (x) and north (y) of the depot."""

    x: float
    y: float

    def manhattan(self, other: Point) -> float:
        """Distance along a grid of streets, metres."""
        return abs(self.x - other.x) + abs(self.y - other.y)

    def euclid(self, other: Point) -> float:
        return math.hypot(self.x - other.x, self.y - other.y)


@dataclass(frozen=True)
class GeoFrame:
    """An equirectangular projection around the depot; accurate to metres within ~50 km."""

    latitude: float = 51.5072
    longitude: float = -0.1276

    def to_geo(self, point: Point) -> tuple[float, float]:
        """(latitude, longitude) in degrees of a local point."""
        lat = self.latitude + math.degrees(point.y / EARTH_RADIUS_M)
        lon = self.longitude + math.degrees(
            point.x / (EARTH_RADIUS_M * math.cos(math.radians(self.latitude)))
        )
        return lat, lon

    def to_local(self, latitude: float, longitude: float) -> Point:
        """The local point of (latitude, longitude)."""
        y = math.radians(latitude - self.latitude) * EARTH_RADIUS_M
        x = math.radians(longitude - self.longitude) * (
            EARTH_RADIUS_M * math.cos(math.radians(self.latitude))
        )
        return Point(x, y)
