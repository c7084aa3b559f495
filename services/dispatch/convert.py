"""Protobuf messages of the dispatch contract to and from the domain types, with validation
that names the offending field (``orders[3].window.end: ...``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from google.protobuf import duration_pb2, timestamp_pb2

from services.dispatch.live import OrderView, PlanView, VehicleRouteView
from services.dispatch.problem import (
    DepotSpec,
    GeoPoint,
    OrderSpec,
    PlanePoint,
    PlannedRoute,
    PlanResult,
    Point,
    ScheduledStop,
    TimeWindow,
    Unassigned,
    VehicleSpec,
    is_geo,
)
from services.runtime.errors import ValidationError
from services.runtime.validation import require_count, require_id, require_range
from shoptwin.v1 import common_pb2, dispatch_pb2

MAX_VEHICLES = 500
MAX_ORDERS = 5000
MAX_CAPACITY = 1_000_000
MAX_SERVICE_S = 24 * 3600
MAX_TIME_LIMIT_S = 600.0
MAX_SPEED = 1e6
DAY_S = 24 * 3600.0

# ------------------------------------------------------------------------------- to domain


def seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def duration_s(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def point(field: str, location: common_pb2.Location) -> Point:
    kind = location.WhichOneof("kind")
    if kind == "geo":
        require_range(f"{field}.geo.latitude", location.geo.latitude, -90.0, 90.0)
        require_range(f"{field}.geo.longitude", location.geo.longitude, -180.0, 180.0)
        return GeoPoint(location.geo.latitude, location.geo.longitude)
    if kind == "plane":
        for axis in ("x", "y"):
            value = getattr(location.plane, axis)
            if not math.isfinite(value):
                raise ValidationError(f"{field}.plane.{axis}", f"must be finite, got {value}")
        return PlanePoint(location.plane.x, location.plane.y)
    raise ValidationError(field, "must be set (geo or plane)")


def window(field: str, message: common_pb2.TimeWindow) -> TimeWindow:
    if not message.HasField("start") or not message.HasField("end"):
        raise ValidationError(field, "needs both start and end")
    start, end = seconds(message.start), seconds(message.end)
    if end < start:
        raise ValidationError(f"{field}.end", "must not be before start")
    return TimeWindow(start, end)


def _same_kind(field: str, p: Point, geo: bool) -> None:
    if is_geo(p) != geo:
        raise ValidationError(
            field, f"must be a {'geo' if geo else 'plane'} point like the depot (no mixing)"
        )


def vehicle(field: str, message: dispatch_pb2.Vehicle, geo: bool) -> VehicleSpec:
    require_id(f"{field}.vehicle_id", message.vehicle_id)
    require_range(f"{field}.capacity", message.capacity, 1, MAX_CAPACITY)
    if not math.isfinite(message.speed) or message.speed < 0 or message.speed > MAX_SPEED:
        raise ValidationError(f"{field}.speed", f"must be in 0..{MAX_SPEED:g}, got {message.speed}")
    start = None
    if message.HasField("start"):
        start = point(f"{field}.start", message.start)
        _same_kind(f"{field}.start", start, geo)
    shift = window(f"{field}.shift", message.shift) if message.HasField("shift") else None
    return VehicleSpec(message.vehicle_id, message.capacity, shift, start, message.speed)


def order(field: str, message: dispatch_pb2.Order, geo: bool | None) -> OrderSpec:
    require_id(f"{field}.order_id", message.order_id)
    if not message.HasField("location"):
        raise ValidationError(f"{field}.location", "must be set (geo or plane)")
    location = point(f"{field}.location", message.location)
    if geo is not None:
        _same_kind(f"{field}.location", location, geo)
    require_range(f"{field}.demand", message.demand, 0, MAX_CAPACITY)
    order_window = window(f"{field}.window", message.window) if message.HasField("window") else None
    service = duration_s(message.service_time)
    require_range(f"{field}.service_time", service, 0.0, MAX_SERVICE_S)
    return OrderSpec(message.order_id, location, message.demand, order_window, service)


def _default_hours(times: Sequence[float], now: float) -> TimeWindow:
    """Unset depot hours: from the earliest time the request names (or now) until a day after
    the latest."""
    start = min(times) if times else now
    return TimeWindow(start, max([start, *times]) + DAY_S)


def _request_times(
    depot: dispatch_pb2.Depot,
    vehicles: Sequence[dispatch_pb2.Vehicle],
    orders: Sequence[dispatch_pb2.Order],
) -> list[float]:
    times: list[float] = []
    for v in vehicles:
        if v.HasField("shift"):
            times += [seconds(v.shift.start), seconds(v.shift.end)]
    for o in orders:
        if o.HasField("window"):
            times += [seconds(o.window.start), seconds(o.window.end)]
    return times


def depot(message: dispatch_pb2.Depot, fallback_times: Sequence[float], now: float) -> DepotSpec:
    if not message.HasField("location"):
        raise ValidationError("depot.location", "must be set (geo or plane)")
    location = point("depot.location", message.location)
    if message.HasField("hours"):
        hours = window("depot.hours", message.hours)
    else:
        hours = _default_hours(fallback_times, now)
    return DepotSpec(location, hours)


def fleet(
    depot_message: dispatch_pb2.Depot,
    vehicles: Sequence[dispatch_pb2.Vehicle],
    orders: Sequence[dispatch_pb2.Order],
    now: float,
) -> tuple[DepotSpec, list[VehicleSpec]]:
    """Depot and vehicles of a Plan or ConfigureFleet request."""
    if not depot_message.HasField("location"):
        raise ValidationError("depot", "must be set")
    require_count("vehicles", vehicles, low=1, high=MAX_VEHICLES)
    # Windows are checked (end before start) before they feed the default hours.
    spec = depot(depot_message, _safe_times(depot_message, vehicles, orders), now)
    geo = is_geo(spec.location)
    seen: set[str] = set()
    specs = []
    for i, v in enumerate(vehicles):
        item = vehicle(f"vehicles[{i}]", v, geo)
        if item.vehicle_id in seen:
            raise ValidationError(f"vehicles[{i}].vehicle_id", f"duplicate {item.vehicle_id!r}")
        seen.add(item.vehicle_id)
        specs.append(item)
    return spec, specs


def _safe_times(
    depot_message: dispatch_pb2.Depot,
    vehicles: Sequence[dispatch_pb2.Vehicle],
    orders: Sequence[dispatch_pb2.Order],
) -> list[float]:
    for i, v in enumerate(vehicles):
        if v.HasField("shift"):
            window(f"vehicles[{i}].shift", v.shift)
    for i, o in enumerate(orders):
        if o.HasField("window"):
            window(f"orders[{i}].window", o.window)
    return _request_times(depot_message, vehicles, orders)


def plan_orders(orders: Sequence[dispatch_pb2.Order], geo: bool) -> list[OrderSpec]:
    require_count("orders", orders, high=MAX_ORDERS)
    seen: set[str] = set()
    specs = []
    for i, o in enumerate(orders):
        item = order(f"orders[{i}]", o, geo)
        if item.order_id in seen:
            raise ValidationError(f"orders[{i}].order_id", f"duplicate {item.order_id!r}")
        seen.add(item.order_id)
        specs.append(item)
    return specs


def time_limit(message: dispatch_pb2.PlanRequest) -> float:
    if not message.HasField("time_limit"):
        return 1.0
    value = duration_s(message.time_limit)
    require_range("time_limit", value, 0.0, MAX_TIME_LIMIT_S)
    return value or 1.0


# ----------------------------------------------------------------------------- to protobuf


def timestamp(value: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(round(value * 1e9))
    return ts


def duration(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(value * 1e9))
    return d


def location_message(p: Point) -> common_pb2.Location:
    if isinstance(p, GeoPoint):
        return common_pb2.Location(
            geo=common_pb2.GeoPoint(latitude=p.latitude, longitude=p.longitude)
        )
    return common_pb2.Location(plane=common_pb2.PlanePoint(x=p.x, y=p.y))


def window_message(w: TimeWindow) -> common_pb2.TimeWindow:
    return common_pb2.TimeWindow(start=timestamp(w.start), end=timestamp(w.end))


def stop_message(stop: ScheduledStop) -> dispatch_pb2.Stop:
    return dispatch_pb2.Stop(
        order_id=stop.order_id,
        arrival=timestamp(stop.arrival),
        service_start=timestamp(stop.service_start),
        departure=timestamp(stop.departure),
        load_after=max(0, stop.load_after),
    )


def route_message(route: PlannedRoute) -> dispatch_pb2.Route:
    return dispatch_pb2.Route(
        vehicle_id=route.vehicle_id,
        stops=[stop_message(s) for s in route.stops],
        distance=route.distance,
        duration=duration(route.duration),
        return_time=timestamp(route.return_time),
    )


def unassigned_message(item: Unassigned) -> dispatch_pb2.UnassignedOrder:
    return dispatch_pb2.UnassignedOrder(
        order_id=item.order_id,
        reason=dispatch_pb2.UnassignedReason.Value(f"UNASSIGNED_REASON_{item.reason.name}"),
        detail=item.detail,
    )


def plan_response(result: PlanResult) -> dispatch_pb2.PlanResponse:
    return dispatch_pb2.PlanResponse(
        routes=[route_message(r) for r in result.routes],
        unassigned=[unassigned_message(u) for u in result.unassigned],
        total_distance=result.total_distance,
        total_duration=duration(result.total_duration),
        feasible=result.feasible,
        solve_time=duration(result.solve_time_s),
    )


def order_status(view: OrderView) -> dispatch_pb2.OrderStatus:
    message = dispatch_pb2.OrderStatus(
        order_id=view.order_id,
        state=dispatch_pb2.OrderState.Value(f"ORDER_STATE_{view.state.name}"),
        vehicle_id=view.vehicle_id or "",
        stops_before=list(view.stops_before),
        late=view.late,
        reason=view.reason,
        plan_version=view.plan_version,
    )
    if view.eta is not None:
        message.eta.CopyFrom(timestamp(view.eta))
    if view.window is not None:
        message.window.CopyFrom(window_message(view.window))
    return message


def vehicle_route(view: VehicleRouteView) -> dispatch_pb2.VehicleRoute:
    message = dispatch_pb2.VehicleRoute(
        vehicle_id=view.vehicle_id,
        plan_version=view.plan_version,
        stops=[stop_message(s) for s in view.stops],
    )
    if view.position is not None:
        message.position.CopyFrom(location_message(view.position))
    if view.position_time is not None:
        message.position_time.CopyFrom(timestamp(view.position_time))
    return message


def plan_snapshot(view: PlanView) -> dispatch_pb2.PlanSnapshot:
    return dispatch_pb2.PlanSnapshot(
        plan_version=view.plan_version,
        routes=[route_message(r) for r in view.routes],
        unassigned=[unassigned_message(u) for u in view.unassigned],
        total_distance=view.total_distance,
        cost_before_last_pass=view.cost_before_last_pass,
        cost_after_last_pass=view.cost_after_last_pass,
        updated_at=timestamp(view.updated_at),
    )
