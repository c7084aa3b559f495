"""Typed problem data of dispatch: depot, vehicles, orders, and the result of a plan.

Times are float seconds on one clock (epoch seconds in the live service, plain time units for
Solomon instances, where travel time equals distance). Distances are metres for geographic
points and plane units for plane points; one problem never mixes the two. Nothing here knows
of gRPC or of the solver library.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_008.8
#: 30 km/h in metres per second, the default speed of a geographic vehicle.
DEFAULT_GEO_SPEED = 8.33
#: One plane unit per time unit, the Solomon convention.
DEFAULT_PLANE_SPEED = 1.0


@dataclass(frozen=True)
class PlanePoint:
    """A point in a plane; distance is Euclidean."""

    x: float
    y: float


@dataclass(frozen=True)
class GeoPoint:
    """A WGS 84 point in degrees; distance is haversine metres."""

    latitude: float
    longitude: float


Point = PlanePoint | GeoPoint


def distance(a: Point, b: Point) -> float:
    """Metres between two geo points, or Euclidean units between two plane points."""
    if isinstance(a, PlanePoint) and isinstance(b, PlanePoint):
        return math.hypot(a.x - b.x, a.y - b.y)
    if isinstance(a, GeoPoint) and isinstance(b, GeoPoint):
        return haversine_m(a, b)
    raise ValueError("cannot measure between a geo point and a plane point")


def haversine_m(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle distance in metres."""
    lat1, lat2 = math.radians(a.latitude), math.radians(b.latitude)
    dlat = lat2 - lat1
    dlon = math.radians(b.longitude - a.longitude)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def is_geo(point: Point) -> bool:
    return isinstance(point, GeoPoint)


@dataclass(frozen=True)
class TimeWindow:
    """Closed interval [start, end] in seconds; end is never before start."""

    start: float
    end: float

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"window end {self.end} is before its start {self.start}")


@dataclass(frozen=True)
class DepotSpec:
    location: Point
    #: Opening hours: routes leave and return inside them.
    hours: TimeWindow


@dataclass(frozen=True)
class VehicleSpec:
    vehicle_id: str
    capacity: int
    #: Working hours; None means the depot's hours.
    shift: TimeWindow | None = None
    #: Where the vehicle is when it becomes available; None means the depot.
    start: Point | None = None
    #: Units (metres or plane units) per second; 0 means the default of the point kind.
    speed: float = 0.0
    #: Earliest time it can leave ``start`` (live re-planning of a vehicle on the road).
    available_from: float | None = None

    def speed_for(self, geo: bool) -> float:
        if self.speed > 0:
            return self.speed
        return DEFAULT_GEO_SPEED if geo else DEFAULT_PLANE_SPEED


@dataclass(frozen=True)
class OrderSpec:
    order_id: str
    location: Point
    demand: int
    #: Service must start inside it; None means the depot's hours.
    window: TimeWindow | None = None
    service_time: float = 0.0


@dataclass(frozen=True)
class RoutingProblem:
    """One static vehicle-routing problem with time windows and capacity."""

    depot: DepotSpec
    vehicles: tuple[VehicleSpec, ...]
    orders: tuple[OrderSpec, ...]

    @property
    def geo(self) -> bool:
        return is_geo(self.depot.location)

    def vehicle_shift(self, vehicle: VehicleSpec) -> TimeWindow:
        """The vehicle's working hours clipped to the depot's opening hours."""
        hours = self.depot.hours
        if vehicle.shift is None:
            return hours
        start = max(hours.start, vehicle.shift.start)
        end = min(hours.end, vehicle.shift.end)
        return TimeWindow(start, max(start, end))

    def order_window(self, order: OrderSpec) -> TimeWindow:
        return order.window if order.window is not None else self.depot.hours


class UnassignedReason(enum.Enum):
    DEMAND_EXCEEDS_CAPACITY = 1
    TIME_WINDOW_UNREACHABLE = 2
    NO_CAPACITY_LEFT = 3


@dataclass(frozen=True)
class Unassigned:
    order_id: str
    reason: UnassignedReason
    detail: str


@dataclass(frozen=True)
class ScheduledStop:
    order_id: str
    arrival: float
    service_start: float
    departure: float
    #: Load still on board after this stop.
    load_after: int


@dataclass(frozen=True)
class PlannedRoute:
    vehicle_id: str
    stops: tuple[ScheduledStop, ...]
    distance: float
    #: When the vehicle leaves its start.
    start_time: float
    #: When it is back at the depot.
    return_time: float
    feasible: bool
    #: Seconds late summed over stops and the return, plus excess load: 0 when feasible.
    violation: float = 0.0

    @property
    def duration(self) -> float:
        return self.return_time - self.start_time


@dataclass(frozen=True)
class PlanResult:
    """Routes (one per vehicle with stops), unassigned orders with reasons, totals."""

    routes: tuple[PlannedRoute, ...]
    unassigned: tuple[Unassigned, ...]
    total_distance: float
    total_duration: float
    #: Every route respects capacity, windows and shifts (checked in float arithmetic).
    feasible: bool
    solve_time_s: float

    def routes_by_vehicle(self) -> dict[str, list[str]]:
        return {r.vehicle_id: [s.order_id for s in r.stops] for r in self.routes}
