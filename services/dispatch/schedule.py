"""Timing of one route in float arithmetic: arrivals, waits, loads and feasibility.

The solver works on integers; this module re-times its routes (and the live plan's routes) with
exact distances, so the reported times and the feasibility verdict do not depend on rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.dispatch.problem import (
    OrderSpec,
    PlannedRoute,
    Point,
    ScheduledStop,
    TimeWindow,
    distance,
)

#: Slack on time comparisons, seconds: absorbs float noise, never a real violation.
TIME_EPSILON = 1e-6


@dataclass(frozen=True)
class RouteContext:
    """What timing a route needs besides its stops."""

    vehicle_id: str
    start: Point
    start_time: float
    end: Point
    #: Latest return to ``end`` (shift end clipped to the depot's hours).
    latest_return: float
    speed: float
    capacity: int
    #: Demand already carried on this trip before the first stop (live plans).
    load_before: int = 0


def time_route(
    context: RouteContext,
    order_ids: Sequence[str],
    orders: Mapping[str, OrderSpec],
    default_window: TimeWindow,
    *,
    not_before: float | None = None,
) -> PlannedRoute:
    """Time ``order_ids`` driven in order from ``context.start`` and back to ``context.end``.

    ``not_before`` clamps the first arrival (a vehicle that has not arrived yet arrives no
    earlier than now). Service starts at arrival or at the window's start, whichever is later.
    """
    total_demand = context.load_before + sum(orders[o].demand for o in order_ids)
    load = total_demand - context.load_before
    violation = float(max(0, total_demand - context.capacity))
    clock = context.start_time
    here = context.start
    route_distance = 0.0
    stops: list[ScheduledStop] = []
    for index, order_id in enumerate(order_ids):
        order = orders[order_id]
        leg = distance(here, order.location)
        route_distance += leg
        arrival = clock + leg / context.speed
        if index == 0 and not_before is not None:
            arrival = max(arrival, not_before)
        window = order.window if order.window is not None else default_window
        service_start = max(arrival, window.start)
        if service_start > window.end + TIME_EPSILON:
            violation += service_start - window.end
        departure = service_start + order.service_time
        load -= order.demand
        stops.append(ScheduledStop(order_id, arrival, service_start, departure, load))
        clock = departure
        here = order.location
    leg = distance(here, context.end)
    route_distance += leg
    return_time = clock + leg / context.speed
    if return_time > context.latest_return + TIME_EPSILON:
        violation += return_time - context.latest_return
    return PlannedRoute(
        vehicle_id=context.vehicle_id,
        stops=tuple(stops),
        distance=route_distance,
        start_time=context.start_time,
        return_time=return_time,
        feasible=violation == 0.0,
        violation=violation,
    )
