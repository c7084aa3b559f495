"""The live plan: fleet, orders, routes; cheapest insertion, re-optimisation merge, ETAs.

Synchronous and free of I/O: every operation mutates the in-memory state and returns what
changed (:class:`Changes`), which the engine persists before it answers. Times are epoch seconds
(any consistent clock works; tests pass their own ``now``).

Model of a vehicle on the road: it carries the goods of every order assigned to it on its one
trip of the shift, so capacity bounds the summed demand of the orders it delivers on the trip
(delivered and still open). Once a vehicle reports a position or a stop it is *under way*: its
next stop is frozen (EN_ROUTE) and re-optimisation plans the rest from that stop's departure.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from services.dispatch.problem import (
    DepotSpec,
    OrderSpec,
    PlannedRoute,
    PlanResult,
    Point,
    RoutingProblem,
    ScheduledStop,
    TimeWindow,
    Unassigned,
    UnassignedReason,
    VehicleSpec,
    distance,
    is_geo,
)
from services.dispatch.schedule import TIME_EPSILON, RouteContext, time_route
from services.runtime.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
    ValidationError,
)


class OrderState(enum.Enum):
    ASSIGNED = 1
    EN_ROUTE = 2
    DELIVERED = 3
    FAILED = 4
    CANCELLED = 5
    UNASSIGNABLE = 6


OPEN_STATES = (OrderState.ASSIGNED, OrderState.EN_ROUTE, OrderState.UNASSIGNABLE)
FINAL_STATES = (OrderState.DELIVERED, OrderState.FAILED, OrderState.CANCELLED)


@dataclass
class OrderRecord:
    spec: OrderSpec
    state: OrderState
    submitted_at: float
    vehicle_id: str | None = None
    reason: UnassignedReason | None = None
    detail: str = ""
    #: When it was delivered, failed or cancelled.
    final_time: float | None = None


@dataclass
class VehicleRecord:
    spec: VehicleSpec
    #: Open order ids still to serve, in order.
    route: list[str] = field(default_factory=list)
    #: Last known place and when it was there (a position report or a served stop).
    anchor: Point | None = None
    anchor_time: float | None = None
    #: Under way: its first stop is frozen.
    active: bool = False
    #: Demand delivered so far on this trip.
    delivered_load: int = 0


@dataclass
class Changes:
    """What an operation changed: rows to persist and routes to push to watchers."""

    orders: set[str] = field(default_factory=set)
    vehicles: set[str] = field(default_factory=set)
    fleet: bool = False
    plan: bool = False

    def merge(self, other: Changes) -> None:
        self.orders |= other.orders
        self.vehicles |= other.vehicles
        self.fleet |= other.fleet
        self.plan |= other.plan


@dataclass(frozen=True)
class OrderView:
    order_id: str
    state: OrderState
    vehicle_id: str | None
    eta: float | None
    stops_before: tuple[str, ...]
    late: bool
    reason: str
    plan_version: int
    window: TimeWindow | None


@dataclass(frozen=True)
class VehicleRouteView:
    vehicle_id: str
    plan_version: int
    stops: tuple[ScheduledStop, ...]
    position: Point | None
    position_time: float | None

    def signature(self) -> tuple[object, ...]:
        """What a watcher cares about: the stops and their ETAs to the second."""
        return (
            tuple((s.order_id, round(s.arrival)) for s in self.stops),
            self.position,
            self.position_time,
        )


@dataclass(frozen=True)
class PlanView:
    plan_version: int
    routes: tuple[PlannedRoute, ...]
    unassigned: tuple[Unassigned, ...]
    total_distance: float
    cost_before_last_pass: float
    cost_after_last_pass: float
    updated_at: float


@dataclass(frozen=True)
class ReoptSnapshot:
    """The problem one background pass solves and what it was built from."""

    problem: RoutingProblem
    initial_routes: dict[str, list[str]]
    #: Vehicle id → its frozen first stop at snapshot time.
    frozen: dict[str, str]
    plan_version: int


@dataclass(frozen=True)
class ReoptOutcome:
    adopted: bool
    cost_before: float
    cost_after: float


class LiveDispatcher:
    """The live plan of one fleet. Not thread-safe: call it from one event loop."""

    def __init__(self) -> None:
        self.depot: DepotSpec | None = None
        self.vehicles: dict[str, VehicleRecord] = {}
        self.orders: dict[str, OrderRecord] = {}
        self.plan_version = 0
        self.cost_before_last_pass = 0.0
        self.cost_after_last_pass = 0.0
        self.updated_at = 0.0

    # ----------------------------------------------------------------------------- fleet

    @property
    def geo(self) -> bool:
        return self.depot is not None and is_geo(self.depot.location)

    def configure_fleet(
        self, depot: DepotSpec, vehicles: Iterable[VehicleSpec], now: float
    ) -> Changes:
        """Set depot and vehicles. Vehicles missing from ``vehicles`` leave the fleet and their
        open orders are re-inserted; unassignable orders are retried with the new fleet."""
        vehicles = list(vehicles)
        if any(is_geo(r.spec.location) != is_geo(depot.location) for r in self._open_orders()):
            raise ValidationError(
                "depot.location", "kind (geo or plane) differs from the open orders'"
            )
        changes = Changes(fleet=True, plan=True)
        old = self.vehicles
        self.depot = depot
        self.vehicles = {}
        displaced: list[str] = []
        for spec in vehicles:
            record = old.pop(spec.vehicle_id, None)
            if record is None:
                record = VehicleRecord(spec)
            else:
                record.spec = spec
            self.vehicles[spec.vehicle_id] = record
            changes.vehicles.add(spec.vehicle_id)
        for gone in old.values():
            displaced.extend(gone.route)
            changes.vehicles.add(gone.spec.vehicle_id)
        # Routes that no longer fit the new vehicles (smaller capacity) are rebuilt by insertion.
        for record in self.vehicles.values():
            timed = self._time(record, now, record.route)
            if timed.violation > 0 and not record.active:
                displaced.extend(record.route)
                record.route = []
        displaced.extend(
            o.spec.order_id for o in self.orders.values() if o.state is OrderState.UNASSIGNABLE
        )
        for order_id in displaced:
            self._insert(self.orders[order_id], now, changes)
        self._refresh_states(changes)
        self._bump(now)
        return changes

    def fleet_problem_kind(self) -> bool | None:
        return None if self.depot is None else self.geo

    # ---------------------------------------------------------------------------- orders

    def submit(self, spec: OrderSpec, now: float) -> tuple[OrderView, Changes]:
        """Store ``spec`` and insert it where it adds the least distance without making any
        route later or fuller than it was; unassignable orders are stored with a reason."""
        if spec.order_id in self.orders:
            raise AlreadyExistsError(f"order.order_id: order {spec.order_id!r} already exists")
        if self.depot is None:
            raise FailedPreconditionError("no fleet configured: call ConfigureFleet first")
        if is_geo(spec.location) != self.geo:
            kind = "geo" if self.geo else "plane"
            raise ValidationError("order.location", f"must be a {kind} point like the depot's")
        record = OrderRecord(spec, OrderState.UNASSIGNABLE, submitted_at=now)
        self.orders[spec.order_id] = record
        changes = Changes(plan=True)
        self._insert(record, now, changes)
        self._refresh_states(changes)
        self._bump(now)
        return self.status(spec.order_id, now), changes

    def cancel(self, order_id: str, now: float) -> tuple[OrderView, Changes]:
        record = self._order(order_id)
        if record.state in (OrderState.DELIVERED, OrderState.FAILED):
            raise FailedPreconditionError(f"order_id: order {order_id!r} is already final")
        changes = Changes(orders={order_id})
        if record.state is not OrderState.CANCELLED:
            self._detach(record, changes)
            record.state = OrderState.CANCELLED
            record.final_time = now
            record.reason = None
            record.detail = ""
            changes.plan = True
            self._refresh_states(changes)
            self._bump(now)
        return self.status(order_id, now), changes

    def report_stop(
        self, vehicle_id: str, order_id: str, delivered: bool, reason: str, when: float, now: float
    ) -> tuple[OrderView, Changes]:
        vehicle = self._vehicle(vehicle_id)
        record = self._order(order_id)
        if record.state in FINAL_STATES:
            raise FailedPreconditionError(f"order_id: order {order_id!r} is already final")
        if record.vehicle_id != vehicle_id or order_id not in vehicle.route:
            raise FailedPreconditionError(
                f"order_id: order {order_id!r} is not assigned to vehicle {vehicle_id!r}"
            )
        changes = Changes(orders={order_id}, vehicles={vehicle_id}, plan=True)
        vehicle.route.remove(order_id)
        vehicle.active = True
        vehicle.anchor = record.spec.location
        vehicle.anchor_time = when
        record.final_time = when
        if delivered:
            record.state = OrderState.DELIVERED
            vehicle.delivered_load += record.spec.demand
            record.detail = ""
        else:
            record.state = OrderState.FAILED
            record.detail = reason or "failed"
        self._refresh_states(changes)
        self._bump(now)
        return self.status(order_id, now), changes

    def report_position(
        self, vehicle_id: str, position: Point, when: float, now: float
    ) -> tuple[bool, Changes]:
        """Move the vehicle; True when some window of its route is now at risk."""
        vehicle = self._vehicle(vehicle_id)
        if is_geo(position) != self.geo:
            kind = "geo" if self.geo else "plane"
            raise ValidationError("position", f"must be a {kind} point like the depot's")
        changes = Changes(vehicles={vehicle_id})
        if vehicle.anchor_time is not None and when < vehicle.anchor_time:
            return False, Changes()  # an older reading than what we know: ignore it
        vehicle.anchor = position
        vehicle.anchor_time = when
        if not vehicle.active:
            vehicle.active = True
            self._refresh_states(changes)
        timed = self._time(vehicle, now, vehicle.route)
        return timed.violation > TIME_EPSILON, changes

    # ----------------------------------------------------------------------------- views

    def status(self, order_id: str, now: float) -> OrderView:
        record = self._order(order_id)
        eta: float | None = None
        stops_before: tuple[str, ...] = ()
        late = False
        reason = record.detail
        window = record.spec.window or (self.depot.hours if self.depot else None)
        if record.state in (OrderState.ASSIGNED, OrderState.EN_ROUTE) and record.vehicle_id:
            vehicle = self.vehicles[record.vehicle_id]
            timed = self._time(vehicle, now, vehicle.route)
            index = vehicle.route.index(order_id)
            stop = timed.stops[index]
            eta = stop.arrival
            stops_before = tuple(vehicle.route[:index])
            if window is not None and stop.service_start > window.end + TIME_EPSILON:
                late = True
                reason = f"expected {stop.service_start - window.end:.0f} s after the window"
        elif record.state in (OrderState.DELIVERED, OrderState.FAILED):
            eta = record.final_time
        if record.state is OrderState.UNASSIGNABLE and record.reason is not None:
            reason = f"{record.reason.name}: {record.detail}"
        return OrderView(
            order_id=order_id,
            state=record.state,
            vehicle_id=record.vehicle_id,
            eta=eta,
            stops_before=stops_before,
            late=late,
            reason=reason,
            plan_version=self.plan_version,
            window=window,
        )

    def vehicle_route(self, vehicle_id: str, now: float) -> VehicleRouteView:
        vehicle = self._vehicle(vehicle_id)
        timed = self._time(vehicle, now, vehicle.route)
        return VehicleRouteView(
            vehicle_id, self.plan_version, timed.stops, vehicle.anchor, vehicle.anchor_time
        )

    def plan(self, now: float) -> PlanView:
        routes = tuple(self._time(v, now, v.route) for v in self.vehicles.values() if v.route)
        return PlanView(
            plan_version=self.plan_version,
            routes=routes,
            unassigned=tuple(self._unassigned()),
            total_distance=sum(r.distance for r in routes),
            cost_before_last_pass=self.cost_before_last_pass,
            cost_after_last_pass=self.cost_after_last_pass,
            updated_at=self.updated_at,
        )

    def total_distance(self, now: float) -> float:
        """Distance still to drive over every route (the objective re-optimisation lowers)."""
        return sum(self._time(v, now, v.route).distance for v in self.vehicles.values())

    # --------------------------------------------------------------------- re-optimisation

    def has_work(self) -> bool:
        return (
            any(
                r.state in (OrderState.ASSIGNED, OrderState.UNASSIGNABLE)
                for r in self.orders.values()
            )
            and self.depot is not None
            and bool(self.vehicles)
        )

    def snapshot(self, now: float) -> ReoptSnapshot:
        """The open, unfrozen orders as a static problem: each vehicle starts where its frozen
        stop ends (or where it is), with the capacity it has left."""
        if self.depot is None:
            raise FailedPreconditionError("no fleet configured")
        vehicles: list[VehicleSpec] = []
        frozen: dict[str, str] = {}
        initial: dict[str, list[str]] = {}
        frozen_ids: set[str] = set()
        for vid, vehicle in self.vehicles.items():
            start, available, load = self._free_point(vehicle, now)
            if vehicle.active and vehicle.route:
                frozen[vid] = vehicle.route[0]
                frozen_ids.add(vehicle.route[0])
                initial[vid] = vehicle.route[1:]
            else:
                initial[vid] = list(vehicle.route)
            vehicles.append(
                replace(
                    vehicle.spec,
                    capacity=max(0, vehicle.spec.capacity - load),
                    start=start,
                    available_from=available,
                )
            )
        orders = tuple(
            r.spec
            for r in self.orders.values()
            if r.spec.order_id not in frozen_ids
            and (
                r.state is OrderState.ASSIGNED
                or (
                    r.state is OrderState.UNASSIGNABLE
                    and r.reason is UnassignedReason.NO_CAPACITY_LEFT
                )
            )
        )
        problem = RoutingProblem(self.depot, tuple(vehicles), orders)
        return ReoptSnapshot(problem, initial, frozen, self.plan_version)

    def apply(
        self, snapshot: ReoptSnapshot, result: PlanResult, now: float
    ) -> tuple[ReoptOutcome, Changes]:
        """Merge a finished pass into the current plan and adopt it when it is better.

        Stops served or cancelled meanwhile are dropped from the new routes, orders submitted
        meanwhile are inserted into them, and a stop frozen meanwhile stays first. Better means
        less lateness, then more orders assigned, then less distance.
        """
        before = self._score(now)
        planned = result.routes_by_vehicle()
        solved_ids = {o.order_id for o in snapshot.problem.orders}
        reasons = {u.order_id: u for u in result.unassigned}
        old_routes = {vid: list(v.route) for vid, v in self.vehicles.items()}
        old_orders = {
            oid: (r.state, r.vehicle_id, r.reason, r.detail) for oid, r in self.orders.items()
        }
        # Frozen stops first: one frozen meanwhile may sit in another vehicle's new route.
        heads = {
            vid: vehicle.route[:1] if vehicle.active and vehicle.route else []
            for vid, vehicle in self.vehicles.items()
        }
        placed: set[str] = {o for head in heads.values() for o in head}
        for vid, vehicle in self.vehicles.items():
            tail = [o for o in planned.get(vid, []) if self._is_open(o) and o not in placed]
            vehicle.route = heads[vid] + tail
            placed.update(tail)
        changes = Changes(plan=True)
        for oid, record in self.orders.items():
            if (
                record.state
                not in (OrderState.ASSIGNED, OrderState.EN_ROUTE, OrderState.UNASSIGNABLE)
                or oid in placed
            ):
                continue
            if oid in solved_ids and oid in reasons:
                record.state = OrderState.UNASSIGNABLE
                record.vehicle_id = None
                record.reason = reasons[oid].reason
                record.detail = reasons[oid].detail
            elif record.state is not OrderState.UNASSIGNABLE:
                # Submitted during the pass, or frozen on a vehicle that has since moved on.
                self._insert(record, now, changes)
        for vid, vehicle in self.vehicles.items():
            for oid in vehicle.route:
                self.orders[oid].vehicle_id = vid
        after = self._score(now)
        # Float noise must not count as an improvement (each adoption bumps the version).
        adopted = after[:2] < before[:2] or (
            after[:2] == before[:2] and after[2] < before[2] - 1e-9 * max(1.0, before[2])
        )
        if not adopted:
            for vid, route in old_routes.items():
                self.vehicles[vid].route = route
            for oid, (state, vehicle_id, reason, detail) in old_orders.items():
                record = self.orders[oid]
                record.state, record.vehicle_id, record.reason, record.detail = (
                    state,
                    vehicle_id,
                    reason,
                    detail,
                )
            return ReoptOutcome(False, before[2], before[2]), Changes()
        self._refresh_states(changes)
        changes.orders |= {
            oid
            for oid, r in self.orders.items()
            if old_orders.get(oid) != (r.state, r.vehicle_id, r.reason, r.detail) or oid in placed
        }
        changes.vehicles |= {
            vid for vid, v in self.vehicles.items() if old_routes.get(vid) != v.route
        }
        self.cost_before_last_pass = before[2]
        self.cost_after_last_pass = after[2]
        self._bump(now)
        return ReoptOutcome(True, before[2], after[2]), changes

    def record_pass(self, cost_before: float, cost_after: float) -> None:
        self.cost_before_last_pass = cost_before
        self.cost_after_last_pass = cost_after

    # --------------------------------------------------------------------------- helpers

    def _bump(self, now: float) -> None:
        self.plan_version += 1
        self.updated_at = now

    def _order(self, order_id: str) -> OrderRecord:
        record = self.orders.get(order_id)
        if record is None:
            raise NotFoundError(f"order_id: unknown order {order_id!r}")
        return record

    def _vehicle(self, vehicle_id: str) -> VehicleRecord:
        vehicle = self.vehicles.get(vehicle_id)
        if vehicle is None:
            raise NotFoundError(f"vehicle_id: unknown vehicle {vehicle_id!r}")
        return vehicle

    def _is_open(self, order_id: str) -> bool:
        record = self.orders.get(order_id)
        return record is not None and record.state in OPEN_STATES

    def _open_orders(self) -> list[OrderRecord]:
        return [r for r in self.orders.values() if r.state in OPEN_STATES]

    def _unassigned(self) -> list[Unassigned]:
        return [
            Unassigned(r.spec.order_id, r.reason, r.detail)
            for r in self.orders.values()
            if r.state is OrderState.UNASSIGNABLE and r.reason is not None
        ]

    def _score(self, now: float) -> tuple[float, int, float]:
        routes = [self._time(v, now, v.route) for v in self.vehicles.values()]
        unassigned = sum(1 for r in self.orders.values() if r.state is OrderState.UNASSIGNABLE)
        return (
            round(sum(r.violation for r in routes), 3),
            unassigned,
            sum(r.distance for r in routes),
        )

    def _context(self, vehicle: VehicleRecord, now: float) -> tuple[RouteContext, float | None]:
        assert self.depot is not None
        spec = vehicle.spec
        shift = RoutingProblem(self.depot, (), ()).vehicle_shift(spec)
        if vehicle.anchor is not None and vehicle.anchor_time is not None:
            start, start_time, not_before = vehicle.anchor, vehicle.anchor_time, now
        else:
            start = spec.start or self.depot.location
            start_time = max(shift.start, now)
            not_before = None
        context = RouteContext(
            vehicle_id=spec.vehicle_id,
            start=start,
            start_time=start_time,
            end=self.depot.location,
            latest_return=shift.end,
            speed=spec.speed_for(self.geo),
            capacity=spec.capacity,
            load_before=vehicle.delivered_load,
        )
        return context, not_before

    def _time(self, vehicle: VehicleRecord, now: float, route: list[str]) -> PlannedRoute:
        assert self.depot is not None
        context, not_before = self._context(vehicle, now)
        specs = {oid: self.orders[oid].spec for oid in route}
        return time_route(context, route, specs, self.depot.hours, not_before=not_before)

    def _free_point(self, vehicle: VehicleRecord, now: float) -> tuple[Point, float, int]:
        """Where and when the vehicle is free to take re-planned stops, and the load it has
        committed by then (delivered plus its frozen stop)."""
        context, not_before = self._context(vehicle, now)
        load = vehicle.delivered_load
        if vehicle.active and vehicle.route:
            first = vehicle.route[0]
            timed = self._time(vehicle, now, [first])
            return (
                self.orders[first].spec.location,
                timed.stops[0].departure,
                load + (self.orders[first].spec.demand),
            )
        start_time = context.start_time if not_before is None else max(context.start_time, now)
        return context.start, start_time, load

    def _detach(self, record: OrderRecord, changes: Changes) -> None:
        if record.vehicle_id is not None:
            vehicle = self.vehicles.get(record.vehicle_id)
            if vehicle is not None and record.spec.order_id in vehicle.route:
                vehicle.route.remove(record.spec.order_id)
                changes.vehicles.add(record.vehicle_id)
        record.vehicle_id = None

    def _refresh_states(self, changes: Changes) -> None:
        """ASSIGNED vs EN_ROUTE follows the routes: the first stop of a vehicle under way."""
        for vid, vehicle in self.vehicles.items():
            for index, oid in enumerate(vehicle.route):
                record = self.orders[oid]
                state = (
                    OrderState.EN_ROUTE if index == 0 and vehicle.active else OrderState.ASSIGNED
                )
                if record.state is not state or record.vehicle_id != vid:
                    record.state = state
                    record.vehicle_id = vid
                    record.reason = None
                    record.detail = ""
                    changes.orders.add(oid)

    def _insert(self, record: OrderRecord, now: float, changes: Changes) -> None:
        """Cheapest feasible insertion of ``record`` into the current routes."""
        assert self.depot is not None
        spec = record.spec
        self._detach(record, changes)
        changes.orders.add(spec.order_id)
        best: tuple[float, str, int] | None = None
        # (added distance, vehicle, position, needs a full re-timing to decide)
        candidates: list[tuple[float, str, int, bool]] = []
        window = spec.window or self.depot.hours
        for vid, vehicle in self.vehicles.items():
            route = vehicle.route
            specs = [self.orders[o].spec for o in route]
            load = vehicle.delivered_load + sum(o.demand for o in specs)
            if load + spec.demand > vehicle.spec.capacity:
                continue
            context, not_before = self._context(vehicle, now)
            timed = self._time(vehicle, now, route)
            speed = context.speed
            points = [context.start, *(o.location for o in specs), context.end]
            to_new = [distance(p, spec.location) for p in points]
            latest = self._latest_starts(context, specs) if timed.violation == 0 else None
            first = 1 if vehicle.active and route else 0
            for position in range(first, len(route) + 1):
                before, after = points[position], points[position + 1]
                delta = to_new[position] + to_new[position + 1] - distance(before, after)
                if latest is None:
                    candidates.append((delta, vid, position, True))
                    continue
                # O(1) check against the latest feasible start of each later stop.
                if position == 0:
                    arrival = context.start_time + to_new[0] / speed
                    if not_before is not None:
                        arrival = max(arrival, not_before)
                else:
                    arrival = timed.stops[position - 1].departure + to_new[position] / speed
                begin = max(arrival, window.start)
                if begin > window.end + TIME_EPSILON:
                    continue
                onward = begin + spec.service_time + to_new[position + 1] / speed
                if onward <= latest[position] + TIME_EPSILON:
                    candidates.append((delta, vid, position, False))
        # Ties go to the later position: the stops already promised keep their ETAs.
        candidates.sort(key=lambda c: (round(c[0], 6), -c[2], c[1]))
        for delta, vid, position, full_check in candidates:
            if full_check:
                vehicle = self.vehicles[vid]
                baseline = self._time(vehicle, now, vehicle.route).violation
                trial = [*vehicle.route[:position], spec.order_id, *vehicle.route[position:]]
                by_id = {oid: self.orders[oid].spec for oid in vehicle.route}
                by_id[spec.order_id] = spec
                context, not_before = self._context(vehicle, now)
                timed = time_route(context, trial, by_id, self.depot.hours, not_before=not_before)
                if timed.violation > baseline + TIME_EPSILON:
                    continue
            best = (delta, vid, position)
            break
        if best is not None:
            _, vid, position = best
            self.vehicles[vid].route.insert(position, spec.order_id)
            record.state = OrderState.ASSIGNED
            record.vehicle_id = vid
            record.reason = None
            record.detail = ""
            changes.vehicles.add(vid)
            return
        record.state = OrderState.UNASSIGNABLE
        record.vehicle_id = None
        record.reason, record.detail = self._why_unassignable(spec, now)

    def _latest_starts(self, context: RouteContext, specs: list[OrderSpec]) -> list[float]:
        """Latest arrival at each stop (and, last, at the end) that keeps the rest of an
        on-time route on time: the classic backward slack of insertion heuristics."""
        assert self.depot is not None
        latest = [0.0] * (len(specs) + 1)
        latest[-1] = context.latest_return
        following = context.end
        for i in range(len(specs) - 1, -1, -1):
            order = specs[i]
            window = order.window or self.depot.hours
            travel = distance(order.location, following) / context.speed
            latest[i] = min(window.end, latest[i + 1] - travel - order.service_time)
            following = order.location
        return latest

    def _why_unassignable(self, spec: OrderSpec, now: float) -> tuple[UnassignedReason, str]:
        assert self.depot is not None
        capacities = [v.spec.capacity for v in self.vehicles.values()]
        if not capacities or spec.demand > max(capacities):
            return (
                UnassignedReason.DEMAND_EXCEEDS_CAPACITY,
                f"demand {spec.demand} is above every vehicle capacity "
                f"(max {max(capacities, default=0)})",
            )
        for vehicle in self.vehicles.values():
            if spec.demand > vehicle.spec.capacity:
                continue
            start, available, _ = self._free_point(vehicle, now)
            shift = RoutingProblem(self.depot, (), ()).vehicle_shift(vehicle.spec)
            context = RouteContext(
                vehicle_id=vehicle.spec.vehicle_id,
                start=start,
                start_time=available,
                end=self.depot.location,
                latest_return=shift.end,
                speed=vehicle.spec.speed_for(self.geo),
                capacity=vehicle.spec.capacity,
            )
            alone = time_route(context, [spec.order_id], {spec.order_id: spec}, self.depot.hours)
            if alone.feasible:
                return (
                    UnassignedReason.NO_CAPACITY_LEFT,
                    "no room in the current plan; retried at the next re-optimisation",
                )
        return (
            UnassignedReason.TIME_WINDOW_UNREACHABLE,
            "no vehicle can reach it inside its window and return within its shift",
        )


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value
