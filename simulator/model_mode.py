"""Model mode: a SimPy simulation on top of the behaviour model, the services as calibrated
queues, the 5G model's delays on every call. Answers capacity questions for a simulated day.

Arrivals (non-homogeneous Poisson) start one session per shopper; a dispatcher process plans
waves of orders onto idle vans; each van drives, delivers and sends telemetry batches. Every
call goes through the shopper's or van's radio link, then the service's queue.

Speed: the arrival process draws shoppers and their whole sessions for blocks of arrivals at
once with numpy (``simulator.behaviour.batch``; nothing a shopper decides depends on the
platform's answers in model mode) and compiles them to call lists, so a session only waits,
queues and records. Arrivals, sessions, vans, vans' calls and the stations' requests are
chains of event callbacks, not processes: the same events, without a process's start and end
events; a session or a request is itself the event it waits on (``platform.Rearmed``).
docs/simulator.md ("Validation and performance") has the profiles.
"""

from __future__ import annotations

import bisect
import gc
import heapq
import math
import struct
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from heapq import heappush
from typing import Any

import numpy as np
import simpy
from simpy.events import NORMAL

from simulator.behaviour import (
    DAY_S,
    ActionKind,
    OrderSpec,
    StopOutcome,
    StopResult,
    VehicleState,
    World,
    plan_wave,
    sweep_angle,
)
from simulator.behaviour.batch import KINDS, SessionSampler, draw_shoppers
from simulator.network import Cause, DeviceLink, NetworkModel, RadioType
from simulator.platform import (
    Calibration,
    Rearmed,
    Request,
    Route,
    Station,
    build_stations,
)
from simulator.scenario import Scenario

#: Platform calls of each action: (service, rpc, items per request); ``None`` items means "the
#: cart's size".
CALLS: dict[ActionKind, tuple[tuple[str, str, int | None], ...]] = {
    ActionKind.BROWSE: (("recommendation", "SimilarItems", 1),),
    ActionKind.RECOMMEND: (("recommendation", "Recommend", 1),),
    ActionKind.CLICK: (("recommendation", "RecordFeedback", 1),),
    ActionKind.ADD_TO_CART: (("recommendation", "RecordFeedback", 1),),
    ActionKind.CHECKOUT: (
        ("recommendation", "RecordFeedback", None),
        ("dispatch", "SubmitOrder", 1),
    ),
    ActionKind.SUPPORT: (("intent", "Classify", 1),),
    ActionKind.LEAVE: (),
}


#: Waits (s) before each attempt of a van's call: a stop report is tried five times, a second
#: more apart each time; a dropped telemetry batch goes again once, a second later.
REPORT_STOP_WAITS = (0.0, 1.0, 2.0, 3.0, 4.0)
TELEMETRY_WAITS = (0.0, 1.0)


def scheduled_events(env: simpy.Environment) -> int:
    """Events scheduled so far (SimPy numbers every event it schedules)."""
    counter = getattr(env, "_eid", None)
    text = repr(counter)
    if text.startswith("count(") and text.endswith(")"):
        return int(text[6:-1])
    return 0


@dataclass
class DeliveryLog:
    placed: int = 0
    delivered_on_time: int = 0
    delivered_late: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    #: Per window: (on time, late, failed).
    per_window: dict[int, list[int]] = field(default_factory=dict)


#: Where a call goes: the station's RPC (its samplers and stats resolved).
_Target = Route

#: Shoppers whose sessions are drawn together (one numpy pass per step of the block).
SESSION_BLOCK = 16384


#: A call of a session plan, packed: the wait before it (think time), its network delay
#: outside outages, its target (index into ``ModelRun._targets``) and items.
CALL_RECORD = struct.Struct("<ddII")
_CALL_DTYPE = np.dtype([("wait", "<f8"), ("delay", "<f8"), ("target", "<u4"), ("items", "<u4")])
_CALL_SIZE = CALL_RECORD.size
_unpack_call = CALL_RECORD.unpack_from


@dataclass
class _SessionPlan:
    """A block of sessions compiled to platform calls, per session as plain lists (indexing
    a list is several times cheaper than indexing a numpy array, and gives Python floats
    SimPy adds fast). The calls are packed records (``CALL_RECORD``) in one buffer, session
    ``j``'s from byte ``start[j]`` to ``start[j + 1]``: a session reads its calls minutes of
    simulated time after the block was drawn, when a tuple per call and its floats (four
    objects here and there in memory) have long left the cache; a session's records lie
    side by side, and one ``unpack_from`` reads a call. The first handover / radio-link
    failure of each shopper's link decides whether a call needs the full link model."""

    first_index: int
    start: list[int]
    calls: bytes
    next_outage: list[float]
    first_handover: list[float]
    first_rlf: list[float]
    radio: list[int]
    arrival: list[float]
    shown: list[int]
    clicked: list[int]
    orders: dict[int, OrderSpec]
    kind_counts: Callable[..., dict[ActionKind, int]]


@dataclass
class ModelResult:
    """Everything a model-mode run measured, ready for the summary, JSON and the report."""

    scenario: str
    seed: int
    window_s: float
    simulated_s: float
    wall_s: float
    events: int
    shoppers: int
    actions: Counter[str]
    rpc_latencies: dict[str, dict[str, Any]]
    series: dict[str, Any]
    utilisation: dict[str, dict[str, float]]
    saturation: dict[str, Any]
    deliveries: dict[str, Any]
    recommendations: dict[str, float]
    network: dict[str, Any]
    telemetry: dict[str, int]
    cold_chain: dict[str, float]
    #: CPU seconds of the run (on a shared machine a fairer clock than ``wall_s``; not part of
    #: ``as_dict``, whose keys other tools read).
    cpu_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "window_s": self.window_s,
            "simulated_s": self.simulated_s,
            "wall_s": round(self.wall_s, 3),
            "events": self.events,
            "events_per_s": round(self.events_per_s, 1),
            "shoppers": self.shoppers,
            "actions": dict(sorted(self.actions.items())),
            "rpc_latencies": self.rpc_latencies,
            "utilisation": self.utilisation,
            "saturation": self.saturation,
            "deliveries": self.deliveries,
            "recommendations": self.recommendations,
            "network": self.network,
            "telemetry": self.telemetry,
            "cold_chain": self.cold_chain,
            "series": self.series,
        }


class ModelRun:
    """One model-mode run of a scenario."""

    def __init__(
        self,
        scenario: Scenario,
        calibration: Calibration,
        *,
        shoppers_per_day: float | None = None,
    ) -> None:
        if shoppers_per_day is not None:
            scenario = scenario.with_overrides(shoppers_per_day=shoppers_per_day)
        self.scenario = scenario
        self.calibration = calibration.with_overrides(
            scenario.platform.workers, scenario.platform.speedup
        )
        self.world = World.create(scenario.world_config())
        self.env = simpy.Environment()
        self.window_s = scenario.model.window_s
        self.stations: dict[str, Station] = build_stations(
            self.env, self.calibration, self.world.rng("service-times"), self.window_s
        )
        for service, rpc, _ in (c for calls in CALLS.values() for c in calls):
            if service not in self.stations or rpc not in self.stations[service].samplers:
                raise ValueError(f"calibration: services.{service}.rpcs.{rpc} is missing")
        for rpc in ("Ingest",):
            if rpc not in self.stations.get("telemetry", _EMPTY).samplers:
                raise ValueError(f"calibration: services.telemetry.rpcs.{rpc} is missing")
        self.network = NetworkModel(scenario.network, seed=scenario.seed)
        self.deadline_s = scenario.model.deadline_s
        self.arrivals_end_s = scenario.duration_h * 3600.0
        self.end_s = self.arrivals_end_s + scenario.drain_h * 3600.0
        self.actions: Counter[str] = Counter()
        self.shoppers = 0
        #: Orders due for dispatch, in ``plan_wave``'s sweep order (angle around the depot,
        #: ties in the order they came due), with their sort keys: kept sorted as orders come
        #: due, instead of sorting every waiting order at every wave.
        self.pending_orders: list[OrderSpec] = []
        self._pending_keys: list[tuple[float, int]] = []
        self._came_due = 0
        self.open_orders: dict[str, OrderSpec] = {}
        self.deliveries = DeliveryLog()
        self.net_failures: Counter[str] = Counter()
        self.net_calls = 0
        self.telemetry_readings = 0
        self.telemetry_resent = 0
        self.telemetry_batches = 0
        self.vans: list[VehicleState] = []
        #: Cold-chain boxes: the hottest seen, and van-seconds above the limit (8 °C, the
        #: usual upper bound for chilled food).
        self.cold_limit_c = 8.0
        self.cold_max_c = scenario.fleet.cold_chain.setpoint_c
        self.cold_excursion_s = 0.0
        self._session_rng = self.world.rng("sessions")
        self._net_rng = self.world.rng("network")
        self._profiles = {r.value: self.network.profile(r.value) for r in RadioType}
        self._sampler = SessionSampler(self.world.sessions, self.world.recommender)
        self._radio_profiles = [self._profiles[name] for name in self.world.shoppers._radios]
        # Call targets: the station's route of the RPC per (action kind, call number).
        self._targets: list[_Target] = []
        self._target_of: dict[tuple[int, int], int] = {}
        for kind_index, kind in enumerate(KINDS):
            for number, (service, rpc, _) in enumerate(CALLS[kind]):
                station = self.stations[service]
                self._target_of[kind_index, number] = len(self._targets)
                self._targets.append(station.routes[rpc])
        self._calls_per_kind = np.asarray([len(CALLS[kind]) for kind in KINDS], dtype=np.int64)
        self._windows = math.ceil(self.end_s / self.window_s)
        self._rec_shown = [0] * (self._windows + 1)
        self._rec_clicked = [0] * (self._windows + 1)
        self._plan: _SessionPlan | None = None
        self._ingest = self.stations["telemetry"].routes["Ingest"]
        self._report = self.stations["dispatch"].routes["ReportStop"]
        #: Orders placed whose window is not yet within the dispatch horizon, by window start.
        self._not_due: list[tuple[float, int, OrderSpec]] = []
        #: Arrivals: the day's arrival times, the next shopper (its index in ``_plan``, whose
        #: arrival times ``_arrival_times`` holds) and the event it waits on.
        self._day_arrivals = np.empty(0)
        self._arriving = 0
        self._arrival_times: list[float] = []
        self._arrival_event = Rearmed(self.env)
        self._arrive_callback = self._arrive

    # -- processes -----------------------------------------------------------------------------

    def _next_block(self, first: int) -> bool:
        """Draw the block of shoppers from arrival ``first`` on (its sessions are drawn when
        its first shopper is reached); ``False`` when the day has no more."""
        times = self._day_arrivals
        if first >= times.size:
            return False
        plan = self._plan = self._plan_sessions(first, times[first : first + SESSION_BLOCK])
        self._arrival_times = plan.arrival
        self._arriving = 0
        return True

    def _start_arrivals(self) -> None:
        """Schedule the first shopper's arrival; each arrival schedules the next
        (``_arrive``)."""
        self._day_arrivals = self.world.arrivals.times(
            self.world.rng("arrivals"), 0.0, self.arrivals_end_s
        )
        if self._next_block(0):
            self._arrival_event.after(self._arrival_times[0], self._arrive_callback)

    def _arrive(self, _: object) -> None:
        """A shopper arrives: schedule the next arrival, then start this one's session.

        The callback of one reused event, not a process's resume: an arrival waited on by a
        generator made a ``Timeout`` and went through ``Process._resume`` for each of the day's
        million shoppers. The next arrival is scheduled at the same time and in the same
        order as the process did (before the session's first call), so runs repeat theirs.
        The next shopper is an index into its block (a generator of the day's shoppers cost
        a resume and a tuple per shopper); the next block is drawn when the last shopper of
        a block arrives, as before."""
        plan = self._plan
        assert plan is not None
        j = self._arriving
        times = self._arrival_times
        t = times[j]
        delay: float | None
        if j + 1 < len(times):
            self._arriving = j + 1
            delay = times[j + 1] - t
        else:
            self.actions.update(plan.kind_counts())
            self._plan = None
            if self._next_block(plan.first_index + len(times)):
                delay = self._arrival_times[0] - t
            else:
                delay = None
        if delay is not None:
            # ``self._arrival_event.after(delay, self._arrive)`` inline: the event has just
            # fired, and arrival times do not decrease.
            event = self._arrival_event
            callbacks = event._one_callback
            callbacks[0] = self._arrive_callback
            event.callbacks = callbacks
            heappush(event._heap, (self.env._now + delay, NORMAL, next(event._eid), event))
        _Session(self, plan, j).next_call()

    def _plan_sessions(self, first: int, arrivals: np.ndarray) -> _SessionPlan:
        """Shoppers, their sessions and their calls' network delays for a block of arrivals."""
        rng = self._session_rng
        shoppers = draw_shoppers(self.world.shoppers, rng, first, int(arrivals.size))
        sessions = self._sampler.draw(rng, shoppers)
        # Each action's calls: an action of kind k makes CALLS[k] calls, in order; the first
        # waits the think time, the others follow at once. LEAVE makes none and ends it.
        per_action = self._calls_per_kind[sessions.kind]
        action = np.repeat(np.arange(sessions.kind.size), per_action)
        action_start = np.cumsum(per_action) - per_action
        number = np.arange(action.size) - action_start[action]
        kind = sessions.kind[action]
        lookup = np.full((len(KINDS), 2), -1, dtype=np.int64)
        for (k, n), target in self._target_of.items():
            lookup[k, n] = target
        session_of_action = np.repeat(np.arange(shoppers.n), np.diff(sessions.start))
        session = session_of_action[action]
        items = np.where(
            kind == KINDS.index(ActionKind.CHECKOUT),
            np.where(number == 0, sessions.cart_lines[session], 1),
            1,
        )
        start = np.zeros(shoppers.n + 1, dtype=np.int64)
        np.cumsum(np.bincount(session, minlength=shoppers.n), out=start[1:])
        net_rng = self._net_rng
        delay = self.network.exchange_delays(net_rng, self._radio_profiles, shoppers.radio[session])
        handover, rlf = self.network.first_outages(
            net_rng, self._radio_profiles, shoppers.radio, arrivals, moving=False
        )
        calls = np.empty(action.size, dtype=_CALL_DTYPE)
        calls["wait"] = np.where(number == 0, sessions.think[action], 0.0)
        calls["delay"] = delay
        calls["target"] = lookup[kind, number]
        calls["items"] = items
        return _SessionPlan(
            first_index=first,
            start=(start * _CALL_SIZE).tolist(),
            calls=calls.tobytes(),
            next_outage=np.minimum(handover, rlf).tolist(),
            first_handover=handover.tolist(),
            first_rlf=rlf.tolist(),
            radio=shoppers.radio.tolist(),
            arrival=arrivals.tolist(),
            shown=sessions.shown.tolist(),
            clicked=sessions.clicked.tolist(),
            orders=self._sampler.orders(shoppers, sessions, arrivals),
            kind_counts=sessions.kind_counts,
        )

    def _end_session(self, plan: _SessionPlan, j: int) -> None:
        """Shopper ``j`` of ``plan`` made its last call: count its recommendations, place its
        order if it checked out."""
        window = int(self.env._now // self.window_s)  # env.now is a property: a call per read
        self._rec_shown[window] += plan.shown[j]
        self._rec_clicked[window] += plan.clicked[j]
        order = plan.orders.get(j)
        if order is not None:
            self.deliveries.placed += 1
            # Placement number breaks ties: orders themselves do not compare.
            heapq.heappush(self._not_due, (order.window_start_s, self.deliveries.placed, order))
            self.open_orders[order.order_id] = order

    def _dispatcher(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        interval = self.scenario.model.dispatch_interval_min * 60.0
        horizon = self.scenario.model.dispatch_horizon_min * 60.0
        capacity = self.scenario.fleet.capacity
        not_due = self._not_due
        while env.now < self.end_s:
            # Orders come due in order of window start: move them from the heap to the
            # waiting list instead of scanning every order placed at every wave.
            while not_due and not_due[0][0] <= env.now + horizon:
                order = heapq.heappop(not_due)[2]
                key = (sweep_angle(order), self._came_due)
                self._came_due += 1
                at = bisect.bisect(self._pending_keys, key)
                self._pending_keys.insert(at, key)
                self.pending_orders.insert(at, order)
            due = self.pending_orders
            if due:
                plans = plan_wave(
                    due,
                    self._vans_on_shift(),
                    capacity,
                    now_s=env.now,
                    speed_mps=self.scenario.fleet.road.free_flow_mps * 0.7,
                    stop_s=self.scenario.orders.service_time_s
                    + self.scenario.fleet.door_extra_mean_s,
                    presorted=True,
                )
                taken: set[str] = set()
                for van, route in plans:
                    self.world.vehicles.assign(van, route)
                    taken.update(o.order_id for o in route)
                if taken:
                    self._drop_taken(taken)
            yield env.timeout(interval)

    def _drop_taken(self, taken: set[str]) -> None:
        """Remove the orders a wave took from the waiting list. ``plan_wave`` cuts its routes
        from the front of the sweep order, so they are usually the list's first orders: then
        one slice deletion instead of a pass over every waiting order."""
        due = self.pending_orders
        n = len(taken)
        if all(o.order_id in taken for o in due[:n]):
            del due[:n]
            del self._pending_keys[:n]
            return
        kept = [i for i, o in enumerate(due) if o.order_id not in taken]
        self.pending_orders = [due[i] for i in kept]
        self._pending_keys = [self._pending_keys[i] for i in kept]

    def _on_shift(self, t: float) -> bool:
        fleet = self.scenario.fleet
        return fleet.shift_start_s <= t % DAY_S < fleet.shift_end_s

    def _vans_on_shift(self) -> list[VehicleState]:
        return self.vans if self._on_shift(self.env.now) else []

    def _send_telemetry(self, van: _Van, readings: int) -> None:
        """Send a batch of ``readings`` over ``van``'s link: through the van's own call
        object when its last batch is through (almost always: a batch period is a minute, a
        call lasts at most the deadline and a retry), else through a new one."""
        self.telemetry_batches += 1
        call = van.telemetry
        if call is None or call.in_flight:
            call = van.telemetry = _TelemetryCall(self, van.link)
        call.send_batch(readings)

    def _stop(self, result: StopResult) -> None:
        log = self.deliveries
        self.open_orders.pop(result.order_id, None)
        window = log.per_window.setdefault(int(self.env.now // self.window_s), [0, 0, 0])
        if result.outcome is StopOutcome.FAILED:
            log.failed += 1
            log.reasons[result.reason] += 1
            window[2] += 1
        elif result.late:
            log.delivered_late += 1
            log.reasons["late: arrived after the window closed"] += 1
            window[1] += 1
        else:
            log.delivered_on_time += 1
            window[0] += 1

    # -- run -----------------------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> ModelResult:
        """Run to the end; ``progress`` gets simulated seconds as they pass."""
        env = self.env
        self.vans = self.world.vehicles.fleet(self.world.rng("fleet"), start_s=0.0)
        self._start_arrivals()
        env.process(self._dispatcher())
        for van in self.vans:
            _Van(self, van)
        started = time.perf_counter()
        cpu_started = time.process_time()
        step = max(self.window_s, 60.0)
        t = 0.0
        with _fewer_collections():
            while t < self.end_s:
                t = min(self.end_s, t + step)
                env.run(until=t)
                if progress is not None:
                    progress(step)
        wall = time.perf_counter() - started
        result = self._result(wall)
        result.cpu_s = time.process_time() - cpu_started
        return result

    def _result(self, wall: float) -> ModelResult:
        windows = math.ceil(self.end_s / self.window_s)
        edges = np.arange(windows + 1) * self.window_s
        latencies: dict[str, dict[str, Any]] = {}
        series: dict[str, Any] = {
            "window_start_s": edges[:-1].tolist(),
            "latency_p50_ms": {},
            "latency_p99_ms": {},
            "throughput_rps": {},
            "utilisation": {},
            "queue_length": {},
        }
        for station in self.stations.values():
            for rpc, stats in station.stats.items():
                key = f"{station.name}.{rpc}"
                lat = np.frombuffer(stats.latency_s, dtype=np.float64) * 1000.0
                done = np.frombuffer(stats.completed_at, dtype=np.float64)
                if lat.size == 0 and stats.failed_network == 0:
                    continue
                pct = np.percentile(lat, [50, 95, 99, 99.9]) if lat.size else [math.nan] * 4
                latencies[key] = {
                    "calls": int(lat.size),
                    "failed_network": stats.failed_network,
                    "mean_ms": round(float(lat.mean()), 3) if lat.size else math.nan,
                    "p50_ms": round(float(pct[0]), 3),
                    "p95_ms": round(float(pct[1]), 3),
                    "p99_ms": round(float(pct[2]), 3),
                    "p999_ms": round(float(pct[3]), 3),
                }
                index = np.clip((done // self.window_s).astype(np.int64), 0, windows - 1)
                counts = np.bincount(index, minlength=windows)
                series["throughput_rps"][key] = (counts / self.window_s).round(4).tolist()
                order = np.argsort(index, kind="stable")
                splits = np.split(lat[order], np.cumsum(counts)[:-1])
                # Both percentiles of a window in one call (the same order statistics and
                # interpolation as one call each; ~150 windows per RPC).
                window_pcts = [
                    np.percentile(s, [50, 99]).tolist() if s.size else None for s in splits
                ]
                series["latency_p50_ms"][key] = [
                    round(p[0], 3) if p is not None else None for p in window_pcts
                ]
                series["latency_p99_ms"][key] = [
                    round(p[1], 3) if p is not None else None for p in window_pcts
                ]
        utilisation: dict[str, dict[str, float]] = {}
        saturation: dict[str, Any] = {"services": {}}
        for station in self.stations.values():
            per_window = [station.utilisation(w) for w in range(windows)]
            series["utilisation"][station.name] = [round(u, 4) for u in per_window]
            series["queue_length"][station.name] = [
                round(station.wait_total_s.get(w, 0.0) / self.window_s, 4) for w in range(windows)
            ]
            busy_total = sum(station.busy_s.values())
            peak = max(per_window) if per_window else 0.0
            utilisation[station.name] = {
                "workers": station.workers,
                "mean": round(busy_total / (station.workers * self.end_s), 4),
                "peak_window": round(peak, 4),
                "mean_queue_length_peak_window": round(
                    max(series["queue_length"][station.name]), 4
                ),
            }
            multiplier = 1.0 / peak if peak > 0 else math.inf
            saturation["services"][station.name] = {
                "peak_utilisation": round(peak, 4),
                "load_multiplier_at_saturation": round(multiplier, 2),
            }
        finite = {k: v for k, v in saturation["services"].items() if v["peak_utilisation"] > 0}
        if finite:
            bottleneck = min(finite, key=lambda k: finite[k]["load_multiplier_at_saturation"])
            multiplier = finite[bottleneck]["load_multiplier_at_saturation"]
            saturation["bottleneck"] = bottleneck
            saturation["load_multiplier"] = multiplier
            saturation["shoppers_per_day_at_saturation"] = round(
                self.scenario.shoppers_per_day * multiplier
            )
        log = self.deliveries
        not_done = len(self.open_orders)
        reasons = dict(log.reasons)
        if not_done:
            reasons["not delivered before the simulation ended"] = not_done
        series["deliveries"] = [log.per_window.get(w, [0, 0, 0]) for w in range(windows)]
        if self._plan is not None:
            # The run ended inside a block of arrivals: count the sessions that started.
            self.actions.update(self._plan.kind_counts(self.shoppers - self._plan.first_index))
            self._plan = None
        rec_shown, rec_clicked = self._rec_shown, self._rec_clicked
        # A session ending exactly at the end of the run belongs to the last window.
        rec_shown[windows - 1] += rec_shown[windows]
        rec_clicked[windows - 1] += rec_clicked[windows]
        rec_shown[windows] = rec_clicked[windows] = 0
        shown = sum(rec_shown)
        clicked = sum(rec_clicked)
        series["click_through"] = [
            round(rec_clicked[w] / rec_shown[w], 5) if rec_shown[w] else None
            for w in range(windows)
        ]
        return ModelResult(
            scenario=self.scenario.name,
            seed=self.scenario.seed,
            window_s=self.window_s,
            simulated_s=self.end_s,
            wall_s=wall,
            events=scheduled_events(self.env),
            shoppers=self.shoppers,
            actions=self.actions,
            rpc_latencies=latencies,
            series=series,
            utilisation=utilisation,
            saturation=saturation,
            deliveries={
                "placed": log.placed,
                "delivered_on_time": log.delivered_on_time,
                "delivered_late": log.delivered_late,
                "failed": log.failed + not_done,
                "reasons": reasons,
            },
            recommendations={
                "shown": shown,
                "clicked": clicked,
                "click_through": round(clicked / shown, 5) if shown else 0.0,
                "simulated_recommender_quality": self.scenario.model.recommender_quality,
            },
            network={
                "calls": self.net_calls,
                "dropped": dict(self.net_failures),
                "enabled": self.scenario.network.enabled,
            },
            cold_chain={
                "vans_with_box": sum(1 for v in self.vans if v.spec.cold_chain),
                "max_box_temperature_c": round(self.cold_max_c, 2),
                "limit_c": self.cold_limit_c,
                "van_minutes_above_limit": round(self.cold_excursion_s / 60.0, 1),
            },
            telemetry={
                "readings": self.telemetry_readings,
                "batches": self.telemetry_batches,
                "readings_resent": self.telemetry_resent,
            },
        )


class _Session(Request):
    """One shopper's session as a chain of event callbacks over its calls in the plan: each
    call waits its think time (plus the last answer's downlink) and its uplink, queues at
    its station and is served; after its last call the session ends. (A SimPy process per
    session would add a start and an end event, and a generator resume per wait, to the
    events the calls themselves wait on.) The session is its calls' request (``Request``):
    it makes one call at a time, so one object, which is also the event it waits on, serves
    the whole session."""

    __slots__ = (
        "call",
        "carry",
        "delay",
        "half",
        "j",
        "link",
        "next_outage",
        "plan",
        "run",
        "stop",
    )

    def __init__(self, run: ModelRun, plan: _SessionPlan, j: int) -> None:
        # ``Request.__init__``, inline (a session per shopper, ~1 M a day): the event's fields,
        # SimPy's heap and counter, the reused callback list and the class's end-of-call
        # callbacks. A request's ``arrived``, ``queued``, ``overhead``, ``route`` and
        # ``items`` are set by ``next_call`` and ``reach`` before anything reads them.
        env = run.env
        self.env = env
        self.callbacks = None  # type: ignore[assignment]
        self._value = None
        self._ok = True
        self._heap = env._queue
        self._eid = env._eid
        self._one_callback = [_REACH]
        self._on_served = _Session._served
        self._on_leave = _Session._leave
        self.run = run
        self.plan = plan
        self.j = j
        #: The next call and the end of the session's calls: byte offsets into ``plan.calls``.
        self.call = plan.start[j]
        self.stop = plan.start[j + 1]
        #: The last answer's downlink, waited for with the next call's think time.
        self.carry = 0.0
        self.next_outage = plan.next_outage[j]
        self.link: DeviceLink | None = None
        #: The call in flight: its network delay and half of it (its route and items are the
        #: request's).
        self.delay = 0.0
        self.half = 0.0
        run.shoppers += 1
        run.net_calls += (self.stop - self.call) // _CALL_SIZE

    def next_call(self) -> None:
        """Send the next call (or end the session after the last)."""
        run = self.run
        plan = self.plan
        c = self.call
        if c == self.stop:
            run._end_session(plan, self.j)
            return
        self.call = c + _CALL_SIZE
        wait, delay, target_index, items = _unpack_call(plan.calls, c)
        target = run._targets[target_index]
        wait += self.carry
        # The cause of a drop, looked up only for one: reading an Enum member costs ~0.1 µs,
        # and this runs for every call of the day. ``None``: a loss, outside outages.
        cause: Cause | None = None
        now = self.env._now
        if now + wait >= self.next_outage:
            # A handover or radio-link failure may be in progress: ask the full link model.
            t = now + wait
            link = self._link()
            outage, outage_cause = link.outage_wait(t)
            self.next_outage = link.next_outage_s if outage == 0.0 else t
            if outage > 0.0:
                delay += outage
                cause = outage_cause
        if delay > run.deadline_s:
            run.net_failures[(Cause.LOSS if cause is None else cause).value] += 1
            target.stats.failed_network += 1
            self.carry = 0.0
            self.after(wait + run.deadline_s, _Session.next_call)
            return
        self.route = target
        self.items = items
        self.delay = delay
        self.half = half = delay * 0.5
        # Sent when the uplink is through: ``self.after(wait + half, Request.reach)`` inline
        # (once per call of the day, a Python call fewer). The event is off the heap (it has
        # just fired, or the session is new) and the wait is not negative.
        callbacks = self._one_callback
        callbacks[0] = _REACH
        self.callbacks = callbacks
        heappush(self._heap, (now + (wait + half), NORMAL, next(self._eid), self))

    def _link(self) -> DeviceLink:
        """The shopper's link, made when a call first reaches its first outage."""
        if self.link is None:
            run, plan, j = self.run, self.plan, self.j
            self.link = DeviceLink(
                run._radio_profiles[plan.radio[j]],
                run._net_rng,
                moving=False,
                now_s=plan.arrival[j],
                config=run.network.config,
                first_handover_s=plan.first_handover[j],
                first_rlf_s=plan.first_rlf[j],
            )
        return self.link

    def left(self, in_service: float) -> None:
        half = self.half
        # RpcStats.add, inline (once per call).
        stats = self.route.stats
        stats.completed_at.append(self.env._now + half)
        stats.latency_s.append(self.delay + in_service)
        self.carry = half
        self.next_call()

    def _served(self) -> None:
        # ``Request._served`` with ``left`` inline: the end of most calls of a session (those
        # without overhead), a Python call fewer per such event.
        station = self.route.station
        if station._waiting:
            station._waiting.popleft().after(0.0, Request._start)
        else:
            station._free += 1
        now = self.env._now
        if self.overhead > 0:
            self.after(self.overhead / 2, _Session._leave)
            return
        half = self.half
        stats = self.route.stats
        stats.completed_at.append(now + half)
        stats.latency_s.append(self.delay + (now - self.arrived))
        self.carry = half
        # ``next_call``'s common case inline (a Python call fewer at the end of most calls of
        # the day): a next call clear of outages and within the deadline is sent from here,
        # with the same numbers; anything else (the session's end, a possible outage, a drop)
        # goes through ``next_call``, which reads the same record again.
        c = self.call
        if c != self.stop:
            wait, delay, target_index, items = _unpack_call(self.plan.calls, c)
            wait += half
            if now + wait < self.next_outage and delay <= self.run.deadline_s:
                self.call = c + _CALL_SIZE
                self.route = self.run._targets[target_index]
                self.items = items
                self.delay = delay
                self.half = half = delay * 0.5
                callbacks = self._one_callback
                callbacks[0] = _REACH
                self.callbacks = callbacks
                heappush(self._heap, (now + (wait + half), NORMAL, next(self._eid), self))
                return
        self.next_call()

    def _leave(self) -> None:
        # ``Request._leave`` with ``left`` inline: the end of every call with overhead (the
        # batched ones), a Python call fewer per such event.
        now = self.env._now
        half = self.half
        stats = self.route.stats
        stats.completed_at.append(now + half)
        stats.latency_s.append(self.delay + (now - self.arrived))
        self.carry = half
        self.next_call()


#: ``Request.reach`` as a module constant (read once per call of the day).
_REACH = Request.reach


class _LinkCall(Request):
    """A van's call through its radio link to a station, tried again while dropped: attempt
    ``k`` waits ``waits[k]`` first, then the uplink, queues and is served (event callbacks,
    like ``_Session``)."""

    __slots__ = ("attempt", "delay", "link", "run", "waits")

    def __init__(
        self,
        run: ModelRun,
        link: DeviceLink,
        route: Route,
        items: int,
        waits: tuple[float, ...],
    ) -> None:
        super().__init__(run.env)
        self.run = run
        self.link = link
        self.route = route
        self.items = items
        self.waits = waits
        self.attempt = 0
        self.delay = 0.0

    def start(self) -> None:
        """Send the current attempt."""
        run = self.run
        wait = self.waits[self.attempt]
        run.net_calls += 1
        # ``exchange``: ``transfer``'s numbers without making a ``Transfer`` per call.
        delay, dropped, cause = self.link.exchange(self.env._now + wait, run.deadline_s)
        if dropped:
            run.net_failures[cause.value] += 1
            self.route.stats.failed_network += 1
            # The class's own ``_dropped`` (a telemetry batch counts its resend).
            self.after(wait + delay, type(self)._dropped)
            return
        self.delay = delay
        # ``self.after(wait + delay / 2, Request.reach)`` inline (a van's call a minute): the
        # event is off the heap (new, or its drop has just fired) and the wait not negative.
        callbacks = self._one_callback
        callbacks[0] = _REACH
        self.callbacks = callbacks
        heappush(self._heap, (self.env._now + (wait + delay / 2), NORMAL, next(self._eid), self))

    def _dropped(self) -> None:
        self.attempt += 1
        if self.attempt < len(self.waits):
            self.start()

    def left(self, in_service: float) -> None:
        delay = self.delay
        self.route.stats.add(self.env._now + delay / 2, delay + in_service)


class _TelemetryCall(_LinkCall):
    """A van's telemetry batch (``TELEMETRY_WAITS``: a dropped batch goes again once, a
    second later, and counts as resent). A van keeps one and sends its batches through it
    one after another (``ModelRun._send_telemetry``): a call object, its callback list and a
    retry closure were made and freed every batch period of every van, ~900,000 times a
    day. Reusing the object changes no event: it is made when sent, schedules nothing
    until ``start``, and a batch sent while the last is still in flight gets a new one."""

    __slots__ = ("in_flight",)

    def __init__(self, run: ModelRun, link: DeviceLink) -> None:
        super().__init__(run, link, run._ingest, 0, TELEMETRY_WAITS)
        #: From ``send_batch`` until the batch is through or dropped for good.
        self.in_flight = False

    def send_batch(self, readings: int) -> None:
        self.items = readings
        self.attempt = 0
        self.in_flight = True
        self.start()

    def _dropped(self) -> None:
        self.attempt += 1
        if self.attempt < len(TELEMETRY_WAITS):
            run = self.run
            # A dropped batch goes again (once, a second later).
            run.telemetry_resent += self.items
            run.telemetry_batches += 1
            self.start()
        else:
            self.in_flight = False

    def left(self, in_service: float) -> None:
        delay = self.delay
        # ``RpcStats.add``, inline (a van's batch a minute).
        stats = self.route.stats
        stats.completed_at.append(self.env._now + delay / 2)
        stats.latency_s.append(delay + in_service)
        self.in_flight = False


class _Van(Rearmed):
    """One van's day as the callback of one reused event (``Rearmed``), not a process: every
    batch period it moves (``advance_counting``), reports the stops it finished and sends its
    telemetry batch. A generator process made a ``Timeout`` and went through
    ``Process._resume`` for each of the ~900,000 periods of a black-friday day; the periods
    are the same events, at the same times, and the van draws the same numbers."""

    __slots__ = (
        "advance",
        "carried",
        "cold_chain",
        "link",
        "period",
        "phase",
        "rng",
        "run",
        "telemetry",
        "van",
    )

    def __init__(self, run: ModelRun, van: VehicleState) -> None:
        super().__init__(run.env)
        fleet = run.scenario.fleet
        self.run = run
        self.van = van
        self.period = fleet.telemetry_interval_s * fleet.batch_readings
        self.rng = run.world.rng(f"van-{van.spec.vehicle_id}")
        #: ``VehicleModel.advance_counting`` and whether the van has a chilled box, looked
        #: up once (read every batch period).
        self.advance = run.world.vehicles.advance_counting
        self.cold_chain = van.spec.cold_chain
        self.link = run.network.link(
            van.spec.vehicle_id, van.spec.radio, moving=True, now_s=run.env.now
        )
        #: Readings taken before the first period (sent with its batch).
        self.carried = 0
        #: The call its telemetry batches go through (made with the first).
        self.telemetry: _TelemetryCall | None = None
        # Vans are not synchronised: each starts its batch cycle at its own phase (in step
        # they would send in bursts of the whole fleet).
        self.phase = float(self.rng.uniform(0.0, self.period))
        self.after(self.phase, _Van._start)

    def _start(self) -> None:
        run = self.run
        self.carried, _ = run.world.vehicles.advance_counting(self.rng, self.van, self.phase)
        if self.env._now < run.end_s:
            self.after(self.period, _Van._period)

    def _period(self) -> None:
        """A batch period has passed."""
        run = self.run
        van = self.van
        period = self.period
        readings, results = self.advance(self.rng, van, period)
        readings += self.carried
        self.carried = 0
        if self.cold_chain:
            temperature = van.box_temperature_c
            run.cold_max_c = max(run.cold_max_c, temperature)
            if temperature > run.cold_limit_c:
                # Sampled once per batch period: an estimate of time out of range.
                run.cold_excursion_s += period
        for result in results:
            run._stop(result)
            _LinkCall(run, self.link, run._report, 1, REPORT_STOP_WAITS).start()
        now = self.env._now
        if readings and (van.busy or run._on_shift(now)):
            run.telemetry_readings += readings
            run._send_telemetry(self, readings)
        if now < run.end_s:
            # ``self.after(period, _Van._period)`` inline: the event has just fired.
            callbacks = self._one_callback
            callbacks[0] = _PERIOD
            self.callbacks = callbacks
            heappush(self._heap, (now + period, NORMAL, next(self._eid), self))


#: ``_Van._period`` as a module constant (read every batch period).
_PERIOD = _Van._period


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """The cyclic garbage collector tuned for a run, then restored (it is the process's).

    Every event allocates a few objects that die young (the event, its callback list and
    bound method, a request), while the world, the plans and the sessions in flight live long.
    With the default thresholds Python collects the young generation every 700 allocations
    and rescans the old ones over and over: 2-5 % of a run's CPU (measured with
    ``gc.callbacks``). Objects made before
    the run are frozen out of the collections, and the young generation is collected every
    100,000 allocations. Nothing of the run's own garbage is cyclic, so this frees no later."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


class _Empty:
    samplers: dict[str, Any] = {}


_EMPTY = _Empty()


def bare_simpy_rate(events: int = 1_000_000, processes: int = 1000, seed: int = 0) -> float:
    """Events per second of a bare SimPy loop (processes that only wait on timeouts): the
    baseline model mode's event rate is reported beside."""
    return bare_simpy_rates(events, processes, seed)[0]


def bare_simpy_rates(
    events: int = 1_000_000, processes: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """``bare_simpy_rate`` per wall-clock second and per CPU second (the same loop, timed by
    both clocks)."""
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    per_process = max(1, events // processes)

    def loop(gaps: list[float]) -> Generator[simpy.Event, Any, None]:
        for gap in gaps:
            yield env.timeout(gap)

    for _ in range(processes):
        env.process(loop(rng.exponential(1.0, per_process).tolist()))
    started = time.perf_counter()
    cpu_started = time.process_time()
    env.run()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    events_done = scheduled_events(env)
    return events_done / wall, events_done / max(cpu, 1e-9)
