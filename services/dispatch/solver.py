"""The VRPTW solver: a :class:`RoutingProblem` in, a :class:`PlanResult` out, PyVRP inside.

PyVRP (iterated local search, the state of the art of the EURO-NeurIPS 2022 VRP challenge)
works on integers, so distances and durations are scaled by ``scale`` ticks per unit (1000 by
default: millimetres or milli-units, milliseconds) before solving. Distances are rounded to the
nearest tick; travel durations are rounded up and window ends down, so an integer-feasible plan
is feasible in exact arithmetic too. The routes that come back are re-timed with exact floats
(:mod:`services.dispatch.schedule`), and the reported distance is the exact one.

Orders that no vehicle could serve even alone are taken out before solving with their reason
(demand above every capacity, window unreachable). The others are optional clients with a prize
larger than any detour, so the solver serves every order it can fit and the rest come back as
NO_CAPACITY_LEFT instead of an infeasible plan.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from services.dispatch.problem import (
    GeoPoint,
    OrderSpec,
    PlannedRoute,
    PlanResult,
    Point,
    RoutingProblem,
    Unassigned,
    UnassignedReason,
    VehicleSpec,
)
from services.dispatch.schedule import RouteContext, time_route

DEFAULT_SCALE = 1000


@dataclass(frozen=True)
class SolveOptions:
    """Search budget and determinism of one solve."""

    time_limit_s: float = 1.0
    seed: int = 0
    #: Integer ticks per distance unit and per second.
    scale: int = DEFAULT_SCALE
    #: How servable orders enter the search. "required": all must be served (about twice
    #: as fast per iteration as prize collecting, but the plan comes back infeasible when they
    #: do not all fit). "optional": each carries a prize larger than any detour, so the solver
    #: drops only what cannot fit. "auto": required first; when that plan is infeasible, a
    #: second search with optional orders warm-started from it, half the budget again.
    mode: str = "auto"
    #: "wall" counts the budget in wall-clock seconds (what a caller waits); "cpu" counts the
    #: search's own CPU seconds, so a benchmark on a loaded, shared machine gets the search
    #: effort of a quiet one.
    clock: str = "wall"


def distance_matrix(points: Sequence[Point]) -> np.ndarray:
    """Pairwise distances: haversine metres for geo points, Euclidean for plane points."""
    if not points:
        return np.zeros((0, 0))
    if isinstance(points[0], GeoPoint):
        lat = np.radians([p.latitude for p in points])  # type: ignore[union-attr]
        lon = np.radians([p.longitude for p in points])  # type: ignore[union-attr]
        dlat = lat[None, :] - lat[:, None]
        dlon = lon[None, :] - lon[:, None]
        h = (
            np.sin(dlat / 2) ** 2
            + np.cos(lat)[:, None] * np.cos(lat)[None, :] * np.sin(dlon / 2) ** 2
        )
        return 2 * 6_371_008.8 * np.arcsin(np.minimum(1.0, np.sqrt(h)))
    xy = np.array([[p.x, p.y] for p in points], dtype=np.float64)  # type: ignore[union-attr]
    diff = xy[:, None, :] - xy[None, :, :]
    return np.sqrt((diff**2).sum(axis=-1))


class CpuRuntime:
    """PyVRP stopping criterion: stop after ``budget_s`` CPU seconds of this process."""

    def __init__(self, budget_s: float) -> None:
        self._budget_s = budget_s
        self._start: float | None = None

    def __call__(self, best_cost: int) -> bool:
        now = time.process_time()
        if self._start is None:
            self._start = now
        return now - self._start > self._budget_s


@dataclass
class _VehicleGroup:
    """Vehicles that are interchangeable for the solver: one PyVRP vehicle type."""

    vehicle_ids: list[str]
    spec: VehicleSpec
    start_index: int
    earliest: float
    latest: float
    speed: float


def _group_vehicles(
    problem: RoutingProblem, point_index: dict[Point, int]
) -> tuple[list[_VehicleGroup], dict[str, int]]:
    groups: dict[tuple[object, ...], _VehicleGroup] = {}
    for vehicle in problem.vehicles:
        shift = problem.vehicle_shift(vehicle)
        start = vehicle.start if vehicle.start is not None else problem.depot.location
        earliest = shift.start
        if vehicle.available_from is not None:
            earliest = max(earliest, vehicle.available_from)
        speed = vehicle.speed_for(problem.geo)
        key = (vehicle.capacity, earliest, shift.end, point_index[start], speed)
        if key not in groups:
            groups[key] = _VehicleGroup([], vehicle, point_index[start], earliest, shift.end, speed)
        groups[key].vehicle_ids.append(vehicle.vehicle_id)
    ordered = list(groups.values())
    group_of = {vid: i for i, g in enumerate(ordered) for vid in g.vehicle_ids}
    return ordered, group_of


def _precheck(
    problem: RoutingProblem,
    groups: list[_VehicleGroup],
    dist: np.ndarray,
    order_offset: int,
) -> tuple[list[int], list[Unassigned]]:
    """Indices of orders some vehicle can serve alone, and the others with their reason."""
    orders = problem.orders
    if not orders:
        return [], []
    demand = np.array([o.demand for o in orders], dtype=np.int64)
    windows = [problem.order_window(o) for o in orders]
    w_start = np.array([w.start for w in windows])
    w_end = np.array([w.end for w in windows])
    service = np.array([o.service_time for o in orders])
    to_order = dist[:, order_offset : order_offset + len(orders)]
    back = dist[order_offset : order_offset + len(orders), 0]
    capacity_ok = np.zeros(len(orders), dtype=bool)
    reachable = np.zeros(len(orders), dtype=bool)
    for group in groups:
        fits = demand <= group.spec.capacity
        capacity_ok |= fits
        arrival = group.earliest + to_order[group.start_index] / group.speed
        begin = np.maximum(arrival, w_start)
        ok = (begin <= w_end + 1e-6) & (begin + service + back / group.speed <= group.latest + 1e-6)
        reachable |= ok & fits
    servable: list[int] = []
    rejected: list[Unassigned] = []
    max_capacity = max((g.spec.capacity for g in groups), default=0)
    for i, order in enumerate(orders):
        if not capacity_ok[i]:
            rejected.append(
                Unassigned(
                    order.order_id,
                    UnassignedReason.DEMAND_EXCEEDS_CAPACITY,
                    f"demand {order.demand} is above every vehicle capacity (max {max_capacity})",
                )
            )
        elif not reachable[i]:
            rejected.append(
                Unassigned(
                    order.order_id,
                    UnassignedReason.TIME_WINDOW_UNREACHABLE,
                    "no vehicle can reach it inside its window and return within its shift",
                )
            )
        else:
            servable.append(i)
    return servable, rejected


def solve_problem(
    problem: RoutingProblem,
    options: SolveOptions,
    initial_routes: Mapping[str, Sequence[str]] | None = None,
) -> PlanResult:
    """Solve ``problem`` within ``options.time_limit_s`` and return timed routes.

    ``initial_routes`` (vehicle id → order ids) warm-starts the search from an existing plan;
    orders it names that are not in the problem are ignored, orders it lacks are inserted by
    the solver.
    """
    from pyvrp import Client, Depot, ProblemData, Route, Solution, VehicleType, solve
    from pyvrp import Location as PyLocation
    from pyvrp.exceptions import PenaltyBoundWarning
    from pyvrp.stop import MaxRuntime

    started = time.perf_counter()
    scale = options.scale
    # Points: the depot first, then distinct vehicle starts, then one per order.
    points: list[Point] = [problem.depot.location]
    point_index: dict[Point, int] = {problem.depot.location: 0}
    for vehicle in problem.vehicles:
        if vehicle.start is not None and vehicle.start not in point_index:
            point_index[vehicle.start] = len(points)
            points.append(vehicle.start)
    order_offset = len(points)
    points.extend(o.location for o in problem.orders)
    dist = distance_matrix(points)

    groups, group_of = _group_vehicles(problem, point_index)
    servable, unassigned = _precheck(problem, groups, dist, order_offset)
    orders_by_id = {o.order_id: o for o in problem.orders}

    if not servable or not groups:
        for i in servable:
            unassigned.append(
                Unassigned(
                    problem.orders[i].order_id, UnassignedReason.NO_CAPACITY_LEFT, "no vehicles"
                )
            )
        return PlanResult((), tuple(unassigned), 0.0, 0.0, True, time.perf_counter() - started)

    # The solver sees the depot, the vehicle starts and the servable orders only.
    used = list(range(order_offset)) + [order_offset + i for i in servable]
    sub = dist[np.ix_(used, used)]
    origin = min(
        [problem.depot.hours.start]
        + [g.earliest for g in groups]
        + [problem.order_window(problem.orders[i]).start for i in servable]
    )

    def ticks_floor(t: float) -> int:
        return max(0, math.floor((t - origin) * scale + 1e-6))

    def ticks_ceil(t: float) -> int:
        return max(0, math.ceil((t - origin) * scale - 1e-6))

    def late_ticks(start: float, end: float) -> int:
        # Rounding a window inwards may cross its ends when it is under a tick wide; the exact
        # re-timing of the routes still judges such a stop.
        return max(ticks_floor(end), ticks_ceil(start))

    distance_ticks = np.round(sub * scale).astype(np.int64)
    speeds = sorted({g.speed for g in groups})
    durations = [np.ceil(sub * scale / s - 1e-6).astype(np.int64) for s in speeds]
    max_leg = int(distance_ticks.max()) if distance_ticks.size else 0
    # Serving an order can never cost more than two longest legs, so this prize makes the
    # solver serve every order it can fit.
    prize = 4 * max_leg + 1000

    # Coordinates only steer the search's geometric neighbourhoods; costs come from matrices.
    locations = [PyLocation(x=_xy(points[i])[0], y=_xy(points[i])[1]) for i in used]
    depots = [
        Depot(
            location=0,
            tw_early=ticks_ceil(problem.depot.hours.start),
            tw_late=late_ticks(problem.depot.hours.start, problem.depot.hours.end),
        )
    ]
    start_depot: dict[int, int] = {0: 0}
    for group in groups:
        if group.start_index not in start_depot:
            start_depot[group.start_index] = len(depots)
            depots.append(Depot(location=group.start_index))
    vehicle_types = [
        VehicleType(
            num_available=len(g.vehicle_ids),
            capacity=[g.spec.capacity],
            start_depot=start_depot[g.start_index],
            end_depot=0,
            # A vehicle free only after its shift ends gets an empty window, not an error.
            tw_early=ticks_ceil(min(g.earliest, g.latest)),
            tw_late=late_ticks(min(g.earliest, g.latest), g.latest),
            profile=speeds.index(g.speed),
            name=g.vehicle_ids[0],
        )
        for g in groups
    ]
    client_index = {problem.orders[i].order_id: local for local, i in enumerate(servable)}

    def search(required: bool, budget_s: float, warm: Mapping[str, Sequence[str]] | None) -> Any:
        clients = []
        for local, i in enumerate(servable):
            order = problem.orders[i]
            window = problem.order_window(order)
            clients.append(
                Client(
                    location=order_offset + local,
                    delivery=[order.demand],
                    service_duration=math.ceil(order.service_time * scale - 1e-6),
                    tw_early=ticks_ceil(window.start),
                    tw_late=late_ticks(window.start, window.end),
                    required=required,
                    prize=0 if required else prize,
                )
            )
        data = ProblemData(
            locations,
            clients,
            depots,
            vehicle_types,
            [distance_ticks] * len(speeds),
            durations,  # type: ignore[arg-type]
        )
        initial = None
        if warm:
            py_routes = []
            for vehicle_id, order_ids in warm.items():
                visits = [client_index[o] for o in order_ids if o in client_index]
                if visits and vehicle_id in group_of:
                    py_routes.append(Route(data, visits, group_of[vehicle_id]))
            if py_routes:
                try:
                    initial = Solution(data, py_routes)
                except (ValueError, RuntimeError):
                    initial = None  # an inconsistent warm start only costs the head start
        with warnings.catch_warnings():
            # An over-full required pass warns before "auto" falls back to optional orders.
            warnings.simplefilter("ignore", PenaltyBoundWarning)
            budget_s = max(0.01, budget_s)
            stop = CpuRuntime(budget_s) if options.clock == "cpu" else MaxRuntime(budget_s)
            result = solve(
                data,
                stop,
                seed=options.seed,
                collect_stats=False,
                display=False,
                initial_solution=initial,
            )
        return result.best

    budget = options.time_limit_s - (time.perf_counter() - started)
    if options.mode == "optional":
        best = search(False, budget, initial_routes)
    else:
        best = search(True, budget, initial_routes)
        if options.mode == "auto" and not best.is_feasible():
            spare = {i: list(g.vehicle_ids) for i, g in enumerate(groups)}
            warm = {
                spare[r.vehicle_type()].pop(0): [
                    problem.orders[servable[a.idx]].order_id for a in r if a.is_client()
                ]
                for r in best.routes()
            }
            best = search(False, options.time_limit_s / 2, warm or initial_routes)

    # Hand each route to a vehicle of its type; the warm start's owner keeps its route when
    # possible so that live plans do not shuffle identical vehicles around.
    free_ids = {i: list(g.vehicle_ids) for i, g in enumerate(groups)}
    planned: list[PlannedRoute] = []
    served: set[str] = set()
    for py_route in best.routes():
        visits = [problem.orders[servable[a.idx]].order_id for a in py_route if a.is_client()]
        if not visits:
            continue
        type_index = py_route.vehicle_type()
        candidates = free_ids[type_index]
        owner = candidates[0]
        if initial_routes:
            for vid in candidates:
                if set(initial_routes.get(vid, ())) & set(visits):
                    owner = vid
                    break
        candidates.remove(owner)
        group = groups[type_index]
        # Re-time exactly: leave as early as allowed (never less feasible than the solver's
        # rounded start), then leave later by the wait at the first stop, so the vehicle
        # arrives just in time for it and every service start stays the same.
        context = RouteContext(
            vehicle_id=owner,
            start=points[group.start_index],
            start_time=group.earliest,
            end=problem.depot.location,
            latest_return=group.latest,
            speed=group.speed,
            capacity=group.spec.capacity,
        )
        timed = time_route(context, visits, orders_by_id, problem.depot.hours)
        first_wait = timed.stops[0].service_start - timed.stops[0].arrival
        if first_wait > 0:
            context = replace(context, start_time=context.start_time + first_wait)
            later = time_route(context, visits, orders_by_id, problem.depot.hours)
            if later.violation <= timed.violation:
                timed = later
        planned.append(timed)
        served.update(visits)
    for i in servable:
        order_id = problem.orders[i].order_id
        if order_id not in served:
            unassigned.append(
                Unassigned(
                    order_id,
                    UnassignedReason.NO_CAPACITY_LEFT,
                    "servable alone, but no room for it in this plan",
                )
            )
    planned.sort(key=lambda r: r.vehicle_id)
    return PlanResult(
        routes=tuple(planned),
        unassigned=tuple(unassigned),
        total_distance=sum(r.distance for r in planned),
        total_duration=sum(r.duration for r in planned),
        feasible=all(r.feasible for r in planned),
        solve_time_s=time.perf_counter() - started,
    )


def _xy(point: Point) -> tuple[float, float]:
    if isinstance(point, GeoPoint):
        return point.longitude, point.latitude
    return point.x, point.y


def order_lookup(orders: Sequence[OrderSpec]) -> dict[str, OrderSpec]:
    """Orders by id."""
    return {o.order_id: o for o in orders}
