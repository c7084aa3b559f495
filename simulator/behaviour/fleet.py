"""Delivery vans: a grid road network with traffic, stops with doors that open, cold-chain
boxes that warm up while a door is open, and the telemetry a van reports every few seconds.

``VehicleModel.advance(rng, state, dt_s)`` moves a van along its current leg, serves stops and
returns the readings it emitted. The same calls drive the SimPy fleet, the live driver and
Locust's telemetry users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from simulator.behaviour.geo import GeoFrame, Point
from simulator.behaviour.orders import OrderSpec

DEPOT = Point(0.0, 0.0)


@dataclass(frozen=True)
class RoadConfig:
    """Speeds on a Manhattan grid of streets around the depot."""

    #: Free-flow speed, metres per second (30 km/h is typical of a city).
    free_flow_mps: float = 8.33
    #: Speed multiplier per hour of day (rush hours are slower); 24 values.
    congestion: tuple[float, ...] = (
        1.0, 1.0, 1.0, 1.0, 1.0, 0.95, 0.85, 0.6, 0.55, 0.7, 0.8, 0.8,
        0.75, 0.75, 0.8, 0.75, 0.65, 0.55, 0.6, 0.75, 0.85, 0.9, 0.95, 1.0,
    )  # fmt: skip
    #: Spread of ln(speed) per leg: traffic noise.
    traffic_sigma: float = 0.25

    def leg_speed(self, rng: np.random.Generator, t_s: float) -> float:
        """Speed for a leg starting at ``t_s``, metres per second (lognormal traffic noise)."""
        hour = int((t_s % 86_400.0) // 3600)
        mean = self.free_flow_mps * self.congestion[hour]
        return float(mean * rng.lognormal(-(self.traffic_sigma**2) / 2, self.traffic_sigma))


@dataclass(frozen=True)
class ColdChainConfig:
    """A chilled box: warms towards ambient while the door is open, cools back when closed."""

    setpoint_c: float = 4.0
    ambient_c: float = 18.0
    #: Fraction of the gap to ambient closed per minute with the door open.
    warm_rate_per_min: float = 0.1
    #: Fraction of the gap to the setpoint closed per minute with the door shut.
    cool_rate_per_min: float = 0.15
    sensor_noise_c: float = 0.1


@dataclass(frozen=True)
class FleetConfig:
    """The fleet of a scenario."""

    vehicles: int = 10
    capacity: int = 60
    fleet_id: str = "fleet-1"
    #: Share of vans with a cold-chain box.
    cold_chain_share: float = 0.5
    #: Seconds between two telemetry readings of a van.
    telemetry_interval_s: float = 5.0
    #: Readings a van sends in one batch.
    batch_readings: int = 6
    #: Probability that a delivery fails (nobody home, access problem).
    failure_probability: float = 0.03
    #: Door-open time beyond the order's service time, seconds (lognormal mean).
    door_extra_mean_s: float = 60.0
    #: Battery drain per kilometre driven, per cent.
    battery_pct_per_km: float = 0.35
    shift_start_s: float = 7 * 3600.0
    shift_end_s: float = 23 * 3600.0
    radio: str = "5g-nsa"
    road: RoadConfig = field(default_factory=RoadConfig)
    cold_chain: ColdChainConfig = field(default_factory=ColdChainConfig)


@dataclass(frozen=True)
class VehicleSpec:
    vehicle_id: str
    capacity: int
    cold_chain: bool
    radio: str


@dataclass(frozen=True)
class TelemetryReading:
    """What a van reports: the fields of ``shoptwin.v1.Reading`` in plain types."""

    device_id: str
    sequence: int
    time_s: float
    fleet_id: str
    latitude: float
    longitude: float
    speed_mps: float
    heading_deg: float
    battery_pct: float
    door_open: bool
    temperature_c: float | None


class StopOutcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class StopResult:
    """What happened at a stop."""

    order_id: str
    vehicle_id: str
    outcome: StopOutcome
    arrival_s: float
    late: bool
    #: Why it failed or was late; empty when on time.
    reason: str


#: Reasons a delivery fails, with relative weights.
FAILURE_REASONS: tuple[tuple[str, float], ...] = (
    ("customer not at home", 0.6),
    ("address not accessible", 0.25),
    ("goods damaged", 0.15),
)


@dataclass
class VehicleState:
    """A van's position, route and sensors."""

    spec: VehicleSpec
    time_s: float
    position: Point = DEPOT
    #: Stops still to serve, in order; the van returns to the depot after the last.
    route: list[OrderSpec] = field(default_factory=list)
    #: Current leg: waypoints (an L along the street grid), progress in metres, speed.
    leg_target: Point | None = None
    leg_waypoints: list[Point] = field(default_factory=list)
    leg_speed_mps: float = 0.0
    heading_deg: float = 0.0
    #: Seconds left waiting outside for a window to open (door shut), then at the stop (door
    #: open), and the stop being served.
    wait_left_s: float = 0.0
    dwell_left_s: float = 0.0
    serving: OrderSpec | None = None
    sequence: int = 0
    battery_pct: float = 100.0
    box_temperature_c: float = 4.0
    odometer_m: float = 0.0
    next_reading_s: float = 0.0

    @property
    def door_open(self) -> bool:
        return self.dwell_left_s > 0.0

    @property
    def busy(self) -> bool:
        """True while it has stops to serve or is driving back."""
        return bool(self.route) or self.serving is not None or self.leg_target is not None


class VehicleModel:
    """Moves vans, serves stops, and produces telemetry."""

    def __init__(self, config: FleetConfig | None = None, frame: GeoFrame | None = None) -> None:
        self.config = config or FleetConfig()
        self.frame = frame or GeoFrame()
        weights = np.asarray([w for _, w in FAILURE_REASONS])
        self._reason_cdf = np.cumsum(weights) / weights.sum()

    def fleet(self, rng: np.random.Generator, start_s: float = 0.0) -> list[VehicleState]:
        """The scenario's vans, parked at the depot at ``start_s``."""
        cfg = self.config
        states = []
        for i in range(cfg.vehicles):
            spec = VehicleSpec(
                vehicle_id=f"van-{i:03d}",
                capacity=cfg.capacity,
                cold_chain=bool(rng.random() < cfg.cold_chain_share),
                radio=cfg.radio,
            )
            states.append(
                VehicleState(
                    spec=spec,
                    time_s=start_s,
                    box_temperature_c=cfg.cold_chain.setpoint_c,
                    next_reading_s=start_s + float(rng.uniform(0, cfg.telemetry_interval_s)),
                )
            )
        return states

    def assign(self, state: VehicleState, orders: Sequence[OrderSpec]) -> None:
        """Append stops to a van's route (the dispatcher's decision)."""
        state.route.extend(orders)

    def _start_leg(
        self, rng: np.random.Generator, state: VehicleState, target: Point, now: float
    ) -> None:
        corner = Point(target.x, state.position.y)
        state.leg_target = target
        state.leg_waypoints = [corner, target]
        # Traffic of the hour the leg starts in.
        state.leg_speed_mps = self.config.road.leg_speed(rng, now)

    def advance(
        self, rng: np.random.Generator, state: VehicleState, dt_s: float
    ) -> tuple[list[TelemetryReading], list[StopResult]]:
        """Move ``state`` forward by ``dt_s`` seconds: drive, serve stops, return to the depot.
        Returns the telemetry readings due in that time and the stops finished."""
        readings: list[TelemetryReading] = []
        results = self._advance(rng, state, dt_s, readings)
        return readings, results

    def advance_counting(
        self, rng: np.random.Generator, state: VehicleState, dt_s: float
    ) -> tuple[int, list[StopResult]]:
        """As ``advance`` but only counts the readings (model mode needs no reading objects;
        sequence numbers still advance)."""
        # ``_advance``'s counting branch, inline (model mode calls this for every batch period
        # of every van, ~900,000 times a black-friday day): the same arithmetic.
        results: list[StopResult] = []
        start = state.time_s
        end = start + dt_s
        if end > start + 1e-9:
            self._move(rng, state, end - start, results)
            state.time_s = end
        next_reading = state.next_reading_s
        if end >= next_reading - 1e-9:
            interval = self.config.telemetry_interval_s
            count = int((end - next_reading + 1e-9) // interval) + 1
            state.sequence += count
            state.next_reading_s = next_reading + count * interval
            return count, results
        return 0, results

    def _advance(
        self,
        rng: np.random.Generator,
        state: VehicleState,
        dt_s: float,
        readings: list[TelemetryReading] | None,
    ) -> list[StopResult]:
        results: list[StopResult] = []
        end = state.time_s + dt_s
        interval = self.config.telemetry_interval_s
        if readings is None:
            # Only counting: move in one go (the motion and the box are the same whether or
            # not the time is cut at each reading) and count the reading times passed.
            if end > state.time_s + 1e-9:
                self._move(rng, state, end - state.time_s, results)
                state.time_s = end
            if end >= state.next_reading_s - 1e-9:
                count = int((end - state.next_reading_s + 1e-9) // interval) + 1
                state.sequence += count
                state.next_reading_s += count * interval
            return results
        while state.time_s < end - 1e-9:
            step_end = min(end, state.next_reading_s)
            self._move(rng, state, step_end - state.time_s, results)
            state.time_s = step_end
            if state.time_s >= state.next_reading_s - 1e-9:
                if readings is None:
                    state.sequence += 1
                else:
                    readings.append(self.reading(rng, state))
                state.next_reading_s += interval
        return results

    def _move(
        self, rng: np.random.Generator, state: VehicleState, dt: float, results: list[StopResult]
    ) -> None:
        now = state.time_s
        while dt > 1e-9:
            if state.wait_left_s > 0.0:
                used = min(dt, state.wait_left_s)
                self._box(state, used, door_open=False)
                state.wait_left_s -= used
                dt -= used
                now += used
                if state.wait_left_s <= 1e-9:
                    state.wait_left_s = 0.0
                continue
            if state.serving is not None:
                used = min(dt, state.dwell_left_s)
                self._box(state, used, door_open=True)
                state.dwell_left_s -= used
                dt -= used
                now += used
                if state.dwell_left_s <= 1e-9:
                    state.dwell_left_s = 0.0
                    state.serving = None
                continue
            if state.leg_target is None:
                if state.route:
                    self._start_leg(rng, state, state.route[0].location, now)
                elif state.position.x != DEPOT.x or state.position.y != DEPOT.y:
                    self._start_leg(rng, state, DEPOT, now)
                else:
                    self._box(state, dt, door_open=False)
                    return
            waypoint = state.leg_waypoints[0]
            # Coordinates read once (``Point.manhattan`` inline, the same sums): a van moves
            # here every batch period of the day.
            x, y = state.position.x, state.position.y
            wx, wy = waypoint.x, waypoint.y
            gap = abs(x - wx) + abs(y - wy)
            reach = state.leg_speed_mps * dt
            if gap > 1e-6:
                state.heading_deg = math.degrees(math.atan2(wx - x, wy - y)) % 360.0
            if reach < gap:
                f = reach / gap
                state.position = Point(x + (wx - x) * f, y + (wy - y) * f)
                self._drive(state, reach, dt)
                return
            used = gap / state.leg_speed_mps if state.leg_speed_mps > 0 else 0.0
            self._drive(state, gap, used)
            state.position = waypoint
            dt -= used
            now += used
            state.leg_waypoints.pop(0)
            if state.leg_waypoints:
                continue
            state.leg_target = None
            if state.route and state.route[0].location == state.position:
                order = state.route.pop(0)
                results.append(self._arrive(rng, state, order, now))

    def _arrive(
        self, rng: np.random.Generator, state: VehicleState, order: OrderSpec, now: float
    ) -> StopResult:
        cfg = self.config
        # Early vans wait outside, door shut, until the window opens.
        wait = max(0.0, order.window_start_s - now)
        arrival = now
        late = arrival > order.window_end_s
        failed = bool(rng.random() < cfg.failure_probability)
        extra = float(rng.exponential(cfg.door_extra_mean_s))
        state.serving = order
        state.wait_left_s = wait
        state.dwell_left_s = order.service_time_s + extra
        reason = ""
        if failed:
            reason = FAILURE_REASONS[
                int(np.searchsorted(self._reason_cdf, rng.random(), side="right"))
            ][0]
        elif late:
            reason = f"arrived {arrival - order.window_end_s:.0f} s after the window closed"
        return StopResult(
            order_id=order.order_id,
            vehicle_id=state.spec.vehicle_id,
            outcome=StopOutcome.FAILED if failed else StopOutcome.DELIVERED,
            arrival_s=arrival,
            late=late,
            reason=reason,
        )

    def _drive(self, state: VehicleState, metres: float, seconds: float) -> None:
        state.odometer_m += metres
        state.battery_pct = max(
            0.0, state.battery_pct - metres / 1000.0 * self.config.battery_pct_per_km
        )
        self._box(state, seconds, door_open=False)

    def _box(self, state: VehicleState, seconds: float, door_open: bool) -> None:
        if not state.spec.cold_chain or seconds <= 0:
            return
        box = self.config.cold_chain
        if door_open:
            target, rate = box.ambient_c, box.warm_rate_per_min
        else:
            target, rate = box.setpoint_c, box.cool_rate_per_min
        if state.box_temperature_c == target:
            # Settled (a van shut at the depot overnight): the update below would give
            # ``target + 0.0 * keep``, the target itself; no exponential per batch period.
            return
        keep = math.exp(-rate * seconds / 60.0)
        state.box_temperature_c = target + (state.box_temperature_c - target) * keep

    def reading(self, rng: np.random.Generator, state: VehicleState) -> TelemetryReading:
        """The reading a van emits now (advances its sequence number)."""
        state.sequence += 1
        lat, lon = self.frame.to_geo(state.position)
        moving = state.leg_target is not None and state.serving is None
        temperature = None
        if state.spec.cold_chain:
            noise = float(rng.normal(0.0, self.config.cold_chain.sensor_noise_c))
            temperature = round(state.box_temperature_c + noise, 2)
        return TelemetryReading(
            device_id=state.spec.vehicle_id,
            sequence=state.sequence,
            time_s=state.time_s,
            fleet_id=self.config.fleet_id,
            latitude=lat,
            longitude=lon,
            speed_mps=state.leg_speed_mps if moving else 0.0,
            heading_deg=state.heading_deg,
            battery_pct=round(state.battery_pct, 2),
            door_open=state.door_open,
            temperature_c=temperature,
        )


def sweep_angle(order: OrderSpec) -> float:
    """The angle of an order around the depot: ``plan_wave``'s sweep order."""
    return math.atan2(order.location.y, order.location.x)


def plan_wave(
    orders: Sequence[OrderSpec],
    vehicles: Sequence[VehicleState],
    capacity: int,
    *,
    now_s: float | None = None,
    speed_mps: float = 5.0,
    stop_s: float = 180.0,
    presorted: bool = False,
) -> list[tuple[VehicleState, list[OrderSpec]]]:
    """A simple dispatcher for model mode: idle vans take orders split by angle around the
    depot (sweep), each sweep sector in nearest-neighbour order. A sector closes when the van is
    full or, given ``now_s``, when the estimated arrival (grid distance at ``speed_mps`` plus
    ``stop_s`` per stop) would pass an order's window end. Orders no van can take are left out
    of the answer (they wait for the next wave). ``presorted``: ``orders`` are already in
    sweep order (by ``sweep_angle``, ties in the order given), as a caller that keeps its
    waiting orders sorted across waves passes them, instead of sorting them at every wave."""
    idle = [v for v in vehicles if not v.busy]
    if not idle or not orders:
        return []
    by_angle = orders if presorted else sorted(orders, key=sweep_angle)
    plans: list[tuple[VehicleState, list[OrderSpec]]] = []
    chunk: list[OrderSpec] = []
    load = 0
    elapsed = 0.0
    here = DEPOT
    vans = iter(idle)
    for order in by_angle:
        leg = here.manhattan(order.location) / speed_mps
        too_late = (
            now_s is not None
            and bool(chunk)
            and max(now_s + elapsed + leg, order.window_start_s) > order.window_end_s
        )
        if (load + order.demand > capacity or too_late) and chunk:
            van = next(vans, None)
            if van is None:
                return plans
            plans.append((van, nearest_neighbour(chunk)))
            chunk, load, elapsed, here = [], 0, 0.0, DEPOT
            leg = here.manhattan(order.location) / speed_mps
        chunk.append(order)
        load += order.demand
        if now_s is not None:
            elapsed = max(now_s + elapsed + leg, order.window_start_s) - now_s + stop_s
        here = order.location
    if chunk:
        van = next(vans, None)
        if van is not None:
            plans.append((van, nearest_neighbour(chunk)))
    return plans


def nearest_neighbour(orders: Sequence[OrderSpec]) -> list[OrderSpec]:
    """Orders in nearest-neighbour sequence from the depot (grid distance)."""
    left = list(orders)
    out: list[OrderSpec] = []
    here = DEPOT
    while left:
        best = min(range(len(left)), key=lambda i: here.manhattan(left[i].location))
        here = left[best].location
        out.append(left.pop(best))
    return out
