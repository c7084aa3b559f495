"""Live mode: the behaviour model's shoppers and vans call the real gRPC services through the 5G
network model.

Time: simulated seconds run ``speed`` times faster than the wall clock. Think times, arrivals
and van movement are simulated time; the network model's delays (milliseconds) are applied in
real time, unscaled. Every timestamp sent to a service is the wall-clock instant of the
simulated event, so services see a consistent, sped-up world (order windows shrink by
``speed``; van speeds sent to dispatch grow by ``speed``), and telemetry times are never in the
future.

Every call goes through the caller's radio link: the model drops it (the call is never sent and
counts as failed-by-5G-model) or delays it (half the delay before, half after). Telemetry
batches are independent calls, so the network reorders them; a dropped batch stays in the van's
buffer and is resent. The summary splits failed calls into caused-by-5G-model and other, follows
every order to delivered / late / failed (with a reason), and compares telemetry stored with
telemetry acknowledged.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from simulator.behaviour import (
    Action,
    ActionKind,
    Item,
    OrderSpec,
    RecommendedItem,
    SessionState,
    StopOutcome,
    StopResult,
    TelemetryReading,
    VehicleState,
    World,
)
from simulator.network import DeviceLink, NetworkModel
from simulator.scenario import Scenario

T = TypeVar("T")

SERVICES = ("recommendation", "intent", "dispatch", "telemetry")
DEFAULT_PORTS = {"recommendation": 50051, "intent": 50052, "dispatch": 50053, "telemetry": 50054}
#: Statuses that are a correct answer in context, not a failure: a resent order the service
#: already stored (its first attempt's answer was lost).
EXPECTED = {("dispatch.SubmitOrder", "ALREADY_EXISTS")}


@dataclass(frozen=True)
class LiveTargets:
    """Addresses of the four services."""

    recommendation: str = "127.0.0.1:50051"
    intent: str = "127.0.0.1:50052"
    dispatch: str = "127.0.0.1:50053"
    telemetry: str = "127.0.0.1:50054"

    @classmethod
    def parse(cls, text: str) -> LiveTargets:
        """``name=host:port,...``; names not given keep their defaults."""
        values: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, address = part.partition("=")
            if not sep or name not in SERVICES or not address:
                raise ValueError(
                    f"{part!r}: expected name=host:port with name one of {', '.join(SERVICES)}"
                )
            values[name] = address
        return cls(**values)


class SimClock:
    """Simulated time running ``speed`` times faster than the wall clock from ``start_s``."""

    def __init__(self, start_s: float, speed: float) -> None:
        self.start_s = start_s
        self.speed = speed
        self._wall0 = time.monotonic()
        self._epoch0 = time.time()

    def now(self) -> float:
        return self.start_s + (time.monotonic() - self._wall0) * self.speed

    async def sleep(self, sim_seconds: float) -> None:
        if sim_seconds > 0:
            await asyncio.sleep(sim_seconds / self.speed)

    async def sleep_until(self, sim_s: float) -> None:
        await self.sleep(sim_s - self.now())

    def timestamp(self, sim_s: float) -> Timestamp:
        """The wall-clock instant of simulated time ``sim_s``."""
        ts = Timestamp()
        ts.FromNanoseconds(int((self._epoch0 + (sim_s - self.start_s) / self.speed) * 1e9))
        return ts

    def wall_duration(self, sim_seconds: float) -> Duration:
        d = Duration()
        d.FromNanoseconds(int(sim_seconds / self.speed * 1e9))
        return d


@dataclass
class CallLog:
    """Calls by RPC and status, latencies, and per-window series."""

    window_s: float
    by_rpc: dict[str, Counter[str]] = field(default_factory=dict)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    per_window: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    failed_by_network: int = 0
    failed_other: int = 0
    other_errors: Counter[str] = field(default_factory=Counter)

    def record(self, rpc: str, status: str, sim_s: float, latency_ms: float | None) -> None:
        self.by_rpc.setdefault(rpc, Counter())[status] += 1
        if status == "NETWORK_DROPPED":
            self.failed_by_network += 1
        elif status != "OK" and (rpc, status) not in EXPECTED:
            self.failed_other += 1
        if latency_ms is not None:
            self.latencies_ms.setdefault(rpc, []).append(latency_ms)
            window = int(sim_s // self.window_s)
            self.per_window.setdefault(rpc, {}).setdefault(window, []).append(latency_ms)


class NetworkDropped(Exception):
    """The 5G model dropped a call before it was sent."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class Caller:
    """Makes one real call through a device's radio link and records its outcome."""

    def __init__(self, clock: SimClock, log: CallLog, deadline_s: float) -> None:
        self.clock = clock
        self.log = log
        self.deadline_s = deadline_s

    async def call(
        self,
        rpc: str,
        link: DeviceLink,
        method: Callable[..., Awaitable[T]],
        request: Any,
    ) -> T:
        """``method(request)`` after the link's uplink delay; raises ``NetworkDropped`` or the
        ``grpc.aio.AioRpcError`` after recording it."""
        sim_now = self.clock.now()
        transfer = link.transfer(sim_now, self.deadline_s)
        if transfer.dropped:
            self.log.record(rpc, "NETWORK_DROPPED", sim_now, None)
            raise NetworkDropped(transfer.cause.value)
        started = time.perf_counter()
        half = transfer.delay_s / 2
        await asyncio.sleep(half)
        try:
            # The service gets the whole deadline: a DEADLINE_EXCEEDED then means the service was
            # slow, not the network (whose own excess is a drop above), so causes stay apart.
            response = await method(request, timeout=self.deadline_s)
        except grpc.aio.AioRpcError as exc:
            status = exc.code().name
            self.log.record(rpc, status, sim_now, None)
            if (rpc, status) not in EXPECTED:
                self.log.other_errors[f"{rpc} {status}: {exc.details()}"[:200]] += 1
            raise
        await asyncio.sleep(half)
        self.log.record(rpc, "OK", sim_now, (time.perf_counter() - started) * 1000.0)
        return response


@dataclass
class OrderTrack:
    spec: OrderSpec
    state: str = "placing"
    reason: str = ""
    late: bool = False


@dataclass
class TelemetryTrack:
    generated: int = 0
    acknowledged: dict[str, int] = field(default_factory=dict)
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches_sent: int = 0
    batches_dropped: int = 0
    #: Acks that came back after the ack of a later batch of the same van (network reordering).
    batches_reordered: int = 0
    last_acked_batch: dict[str, int] = field(default_factory=dict)
    rejections: Counter[str] = field(default_factory=Counter)


class LiveDriver:
    """Runs a scenario's shoppers and vans against the real services."""

    def __init__(
        self,
        scenario: Scenario,
        targets: LiveTargets,
        *,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.targets = targets
        self.progress = progress
        self.world = World.create(scenario.world_config())
        self.network = NetworkModel(scenario.network, seed=scenario.seed)
        live = scenario.live
        self.start_s = live.start_hour * 3600.0
        self.end_s = self.start_s + live.duration_h * 3600.0
        self.clock = SimClock(self.start_s, live.speed)
        self.log = CallLog(window_s=scenario.model.window_s)
        self.caller = Caller(self.clock, self.log, live.deadline_s)
        self.orders: dict[str, OrderTrack] = {}
        self.telemetry = TelemetryTrack()
        self.shoppers = 0
        self.sessions_delayed = 0
        self.rec_shown = 0
        self.rec_clicked = 0
        self.rec_affinity: list[float] = []
        self.intent_total = 0
        self.intent_correct = 0
        self.intent_out_of_scope = 0
        self.ctr_window: dict[int, list[int]] = {}
        self.intent_window: dict[int, list[int]] = {}
        #: Simulator items laid over the recommendation model's item ids (see align_catalogue).
        self.item_of_id: dict[str, Item] = {}
        self.id_of_item: dict[str, str] = {}
        self.vans: list[VehicleState] = []
        self.active_sessions = 0
        self.simulated_end_s = self.start_s
        self._channels: list[grpc.aio.Channel] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # -- set-up --------------------------------------------------------------------------------

    def _open(self) -> None:
        from services.runtime.client import ChannelOptions, RetryPolicy, create_aio_channel
        from shoptwin.v1 import (
            dispatch_pb2_grpc,
            intent_pb2_grpc,
            recommendation_pb2_grpc,
            telemetry_pb2_grpc,
        )

        # Retries are the simulator's business (a call the 5G model drops is never sent), so
        # the channel's transparent retry only covers real UNAVAILABLE answers.
        options = ChannelOptions(
            default_timeout_s=self.scenario.live.deadline_s,
            retry=RetryPolicy(max_attempts=3),
            metadata=(("x-shoptwin-synthetic", "simulator"),),
        )

        def channel(target: str) -> grpc.aio.Channel:
            ch = create_aio_channel(target, options)
            self._channels.append(ch)
            return ch

        self.recommendation = recommendation_pb2_grpc.RecommendationServiceStub(
            channel(self.targets.recommendation)
        )
        self.intent = intent_pb2_grpc.IntentServiceStub(channel(self.targets.intent))
        self.dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel(self.targets.dispatch))
        self.telemetry_stub = telemetry_pb2_grpc.TelemetryServiceStub(
            channel(self.targets.telemetry)
        )

    async def _close(self) -> None:
        for ch in self._channels:
            await ch.close(None)

    async def align_catalogue(self) -> None:
        """Lay the simulator's catalogue over the items the recommendation model knows: ask for
        a cold-start list of popular items, map simulator items onto those ids, and tell the
        service our categories and prices (UpdateCatalog), so recommended items come back with
        categories the shoppers' tastes are defined over. Items left over keep their own ids."""
        from shoptwin.v1 import recommendation_pb2

        known: list[str] = []
        try:
            response = await self.recommendation.Recommend(
                recommendation_pb2.RecommendRequest(user_id="simulator-catalogue-probe", k=1000),
                timeout=self.scenario.live.deadline_s,
            )
            self.log.record("recommendation.Recommend", "OK", self.clock.now(), None)
            known = [item.item_id for item in response.items]
        except grpc.aio.AioRpcError as exc:
            self.log.record("recommendation.Recommend", exc.code().name, self.clock.now(), None)
            self.log.other_errors[f"catalogue probe {exc.code().name}: {exc.details()}"] += 1
        items = list(self.world.catalogue.items)
        for item, item_id in zip(items, known, strict=False):
            self.item_of_id[item_id] = item
            self.id_of_item[item.item_id] = item_id
        if not self.item_of_id:
            return
        catalog = [
            recommendation_pb2.CatalogItem(
                item_id=item_id,
                category=item.category,
                price_minor=item.price_minor,
                in_stock=True,
                description=item.description,
            )
            for item_id, item in self.item_of_id.items()
        ]
        try:
            await self.recommendation.UpdateCatalog(
                recommendation_pb2.UpdateCatalogRequest(items=catalog),
                timeout=self.scenario.live.deadline_s,
            )
            self.log.record("recommendation.UpdateCatalog", "OK", self.clock.now(), None)
        except grpc.aio.AioRpcError as exc:
            self.log.record("recommendation.UpdateCatalog", exc.code().name, self.clock.now(), None)
            self.log.other_errors[f"UpdateCatalog {exc.code().name}: {exc.details()}"] += 1

    def _location(self, x: float, y: float) -> Any:
        from shoptwin.v1 import common_pb2

        lat, lon = self.world.config.frame.to_geo(_point(x, y))
        return common_pb2.Location(geo=common_pb2.GeoPoint(latitude=lat, longitude=lon))

    async def configure_fleet(self) -> bool:
        """Send the depot and vans to dispatch (speeds scaled to wall-clock time)."""
        from shoptwin.v1 import common_pb2, dispatch_pb2

        fleet = self.scenario.fleet
        self.vans = self.world.vehicles.fleet(self.world.rng("fleet"), start_s=self.start_s)
        depot_hours = common_pb2.TimeWindow(
            start=self.clock.timestamp(self.start_s - 3600.0),
            end=self.clock.timestamp(self.end_s + 2 * 86_400.0),
        )
        request = dispatch_pb2.ConfigureFleetRequest(
            depot=dispatch_pb2.Depot(location=self._location(0.0, 0.0), hours=depot_hours),
            vehicles=[
                dispatch_pb2.Vehicle(
                    vehicle_id=van.spec.vehicle_id,
                    capacity=van.spec.capacity,
                    speed=fleet.road.free_flow_mps * 0.7 * self.clock.speed,
                )
                for van in self.vans
            ],
        )
        try:
            await self.dispatch.ConfigureFleet(request, timeout=self.scenario.live.deadline_s)
            self.log.record("dispatch.ConfigureFleet", "OK", self.clock.now(), None)
            return True
        except grpc.aio.AioRpcError as exc:
            self.log.record("dispatch.ConfigureFleet", exc.code().name, self.clock.now(), None)
            self.log.other_errors[f"ConfigureFleet {exc.code().name}: {exc.details()}"] += 1
            return False

    # -- shoppers ------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def arrivals(self) -> None:
        """Start one session per arrival, at its simulated time."""
        times = self.world.arrivals.times(self.world.rng("arrivals"), self.start_s, self.end_s)
        limit = asyncio.Semaphore(self.scenario.live.max_sessions)
        for index, t in enumerate(times.tolist()):
            await self.clock.sleep_until(t)
            if limit.locked():
                self.sessions_delayed += 1
            await limit.acquire()
            self._spawn(self._session(index, limit))

    async def _session(self, index: int, limit: asyncio.Semaphore) -> None:
        self.active_sessions += 1
        try:
            await self._run_session(index)
        finally:
            self.active_sessions -= 1
            limit.release()

    async def _run_session(self, index: int) -> None:

        world = self.world
        # One stream per session: the same seed gives the same sessions whatever the interleaving.
        rng = world.rng(f"session-{index}")
        shopper = world.new_shopper(rng, index)
        self.shoppers += 1
        link = self.network.link(
            f"{shopper.shopper_id}#{index}", shopper.radio, moving=False, now_s=self.clock.now()
        )
        state = world.sessions.start(shopper, f"sim-{self.scenario.seed}-{index}", self.clock.now())
        step = 0
        while not state.done:
            action = world.sessions.next_action(rng, state)
            await self.clock.sleep(action.think_s)
            step += 1
            try:
                await self._perform(action, state, link, step)
            except (NetworkDropped, grpc.aio.AioRpcError):
                # Recorded by the caller; the shopper carries on (a real app shows an error).
                if action.kind is ActionKind.CHECKOUT and action.order is not None:
                    self.orders.setdefault(action.order.order_id, OrderTrack(action.order))

    async def _perform(
        self, action: Action, state: SessionState, link: DeviceLink, step: int
    ) -> None:
        """The platform calls of one action (see docs/simulator.md for the mapping)."""
        from shoptwin.v1 import intent_pb2, recommendation_pb2

        kind = action.kind
        shopper = state.shopper
        if kind is ActionKind.BROWSE and action.item is not None:
            item_id = self.id_of_item.get(action.item.item_id)
            if item_id is not None:
                await self.caller.call(
                    "recommendation.SimilarItems",
                    link,
                    self.recommendation.SimilarItems,
                    recommendation_pb2.SimilarItemsRequest(item_id=item_id, k=10),
                )
        elif kind is ActionKind.RECOMMEND:
            recommended = await self.caller.call(
                "recommendation.Recommend",
                link,
                self.recommendation.Recommend,
                recommendation_pb2.RecommendRequest(user_id=shopper.shopper_id, k=action.k),
            )
            recs = [
                RecommendedItem(i.item_id, i.category, self.item_of_id.get(i.item_id))
                for i in recommended.items
            ]
            state.observe_recommendations(recs)
            self._count_recommendations(shopper, recs)
        elif kind in (ActionKind.CLICK, ActionKind.ADD_TO_CART):
            if kind is ActionKind.CLICK:
                self.rec_clicked += 1
                self._window(self.ctr_window)[1] += 1
            feedback = (
                recommendation_pb2.FEEDBACK_TYPE_CLICK
                if kind is ActionKind.CLICK
                else recommendation_pb2.FEEDBACK_TYPE_ADD_TO_CART
            )
            await self._feedback(
                link,
                state.session_id,
                step,
                shopper.shopper_id,
                [(self._item_id(action.item), int(feedback), 1)],
            )
        elif kind is ActionKind.CHECKOUT and action.order is not None:
            purchase = int(recommendation_pb2.FEEDBACK_TYPE_PURCHASE)
            events = [(self._item_id(item), purchase, q) for item, q in action.cart]
            try:
                await self._feedback(link, state.session_id, step, shopper.shopper_id, events)
            finally:
                # The order goes to dispatch whether or not the purchase events got through.
                await self._submit_order(link, action.order)
        elif kind is ActionKind.SUPPORT and action.utterance is not None:
            classified = await self.caller.call(
                "intent.Classify",
                link,
                self.intent.Classify,
                intent_pb2.ClassifyRequest(
                    text=action.utterance.text, language="en", conversation_id=state.session_id
                ),
            )
            self.intent_total += 1
            correct = classified.intent.intent == action.utterance.intent
            self.intent_correct += correct
            self.intent_out_of_scope += classified.out_of_scope
            window = self._window(self.intent_window)
            window[0] += 1
            window[1] += correct

    def _item_id(self, item: Item | RecommendedItem | None) -> str:
        if item is None:
            return "unknown"
        return self.id_of_item.get(item.item_id, item.item_id)

    def _window(self, table: dict[int, list[int]]) -> list[int]:
        return table.setdefault(int(self.clock.now() // self.log.window_s), [0, 0])

    def _count_recommendations(self, shopper: Any, recs: list[RecommendedItem]) -> None:
        self.rec_shown += len(recs)
        self._window(self.ctr_window)[0] += len(recs)
        for rec in recs:
            index = self.world.catalogue.category_index(rec.category)
            if index is not None:
                self.rec_affinity.append(shopper.affinity(index))

    async def _feedback(
        self,
        link: DeviceLink,
        session_id: str,
        step: int,
        user_id: str,
        events: list[tuple[str, int, int]],
    ) -> None:
        from shoptwin.v1 import recommendation_pb2

        now = self.clock.timestamp(self.clock.now())
        request = recommendation_pb2.RecordFeedbackRequest(
            events=[
                recommendation_pb2.FeedbackEvent(
                    event_id=f"{session_id}-{step}-{i}",
                    user_id=user_id,
                    item_id=item_id,
                    type=kind,  # type: ignore[arg-type]
                    quantity=quantity,
                    time=now,
                )
                for i, (item_id, kind, quantity) in enumerate(events)
            ]
        )
        await self.caller.call(
            "recommendation.RecordFeedback", link, self.recommendation.RecordFeedback, request
        )

    async def _submit_order(self, link: DeviceLink, order: OrderSpec) -> None:
        from shoptwin.v1 import common_pb2, dispatch_pb2

        track = self.orders.setdefault(order.order_id, OrderTrack(order))
        request = dispatch_pb2.SubmitOrderRequest(
            order=dispatch_pb2.Order(
                order_id=order.order_id,
                location=self._location(order.location.x, order.location.y),
                demand=order.demand,
                window=common_pb2.TimeWindow(
                    start=self.clock.timestamp(order.window_start_s),
                    end=self.clock.timestamp(order.window_end_s),
                ),
                service_time=self.clock.wall_duration(order.service_time_s),
            )
        )
        # A shopper's app retries a checkout the network lost; the order id makes it idempotent.
        for attempt in range(3):
            try:
                response = await self.caller.call(
                    "dispatch.SubmitOrder",
                    link,
                    self.dispatch.SubmitOrder,
                    request,
                )
                self._order_status(track, response.status)
                return
            except NetworkDropped:
                track.state, track.reason = "not accepted", "checkout lost by the network"
                await self.clock.sleep(5.0 * (attempt + 1))
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.ALREADY_EXISTS:
                    track.state = "assigned"
                    return
                track.state = "not accepted"
                track.reason = f"SubmitOrder {exc.code().name}: {exc.details()}"
                return

    def _order_status(self, track: OrderTrack, status: Any) -> None:
        from shoptwin.v1 import dispatch_pb2

        name = dispatch_pb2.OrderState.Name(status.state).removeprefix("ORDER_STATE_").lower()
        if track.state in ("delivered", "failed"):
            return
        track.state = name
        track.late = bool(status.late)
        if status.reason:
            track.reason = status.reason

    # -- vans ----------------------------------------------------------------------------------

    async def _watch_route(self, van: VehicleState, stop: asyncio.Event) -> None:
        """Keep the van's route equal to what dispatch says (WatchVehicleRoute), reconnecting
        when the stream breaks."""
        from shoptwin.v1 import dispatch_pb2

        while not stop.is_set():
            try:
                stream = self.dispatch.WatchVehicleRoute(
                    dispatch_pb2.WatchVehicleRouteRequest(vehicle_id=van.spec.vehicle_id)
                )
                async for route in stream:
                    self.log.record(
                        "dispatch.WatchVehicleRoute(message)", "OK", self.clock.now(), None
                    )
                    serving = van.serving.order_id if van.serving is not None else None
                    specs = [
                        self.orders[s.order_id].spec
                        for s in route.stops
                        if s.order_id in self.orders
                        and s.order_id != serving
                        and self.orders[s.order_id].state not in ("delivered", "failed")
                    ]
                    if van.route and specs and specs[0] is not van.route[0]:
                        # The next stop changed: drive to the new one from where the van is.
                        van.leg_target = None
                        van.leg_waypoints = []
                    van.route = specs
                    if stop.is_set():
                        break
            except grpc.aio.AioRpcError as exc:
                self.log.record(
                    "dispatch.WatchVehicleRoute", exc.code().name, self.clock.now(), None
                )
                if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                    return
                await asyncio.sleep(1.0)

    async def _van(self, van: VehicleState, stop: asyncio.Event) -> None:
        fleet = self.scenario.fleet
        rng = self.world.rng(f"van-{van.spec.vehicle_id}")
        link = self.network.link(
            van.spec.vehicle_id, van.spec.radio, moving=True, now_s=self.clock.now()
        )
        buffer: list[TelemetryReading] = []
        period = fleet.telemetry_interval_s * fleet.batch_readings
        batch_id = 0
        last = self.clock.now()
        van.time_s = last
        while not stop.is_set():
            await self.clock.sleep(period)
            now = self.clock.now()
            readings, results = self.world.vehicles.advance(rng, van, now - last)
            last = now
            self.telemetry.generated += len(readings)
            buffer.extend(readings)
            acked = self.telemetry.acknowledged.get(van.spec.vehicle_id, 0)
            buffer = [r for r in buffer if r.sequence > acked]
            if buffer:
                batch_id += 1
                self._spawn(self._send_batch(link, batch_id, list(buffer[:5000])))
            for result in results:
                self._spawn(self._report_stop(link, result))
        # Final flush: resend until every reading is acknowledged (or the drain times out).
        while buffer:
            acked = self.telemetry.acknowledged.get(van.spec.vehicle_id, 0)
            buffer = [r for r in buffer if r.sequence > acked]
            if not buffer:
                break
            batch_id += 1
            await self._send_batch(link, batch_id, list(buffer[:5000]))
            await asyncio.sleep(0.05)

    async def _send_batch(
        self, link: DeviceLink, batch_id: int, readings: list[TelemetryReading]
    ) -> None:
        from shoptwin.v1 import telemetry_pb2

        request = telemetry_pb2.UploadRequest(
            batch_id=batch_id, readings=[self._reading(r) for r in readings]
        )
        self.telemetry.batches_sent += 1
        try:
            ack = await self.caller.call(
                "telemetry.Ingest", link, self.telemetry_stub.Ingest, request
            )
        except NetworkDropped:
            self.telemetry.batches_dropped += 1
            return
        except grpc.aio.AioRpcError:
            return
        track = self.telemetry
        device = readings[0].device_id
        if batch_id < track.last_acked_batch.get(device, 0):
            track.batches_reordered += 1
        track.last_acked_batch[device] = max(track.last_acked_batch.get(device, 0), batch_id)
        track.stored += ack.stored
        track.duplicates += ack.duplicates
        track.rejected += len(ack.rejected)
        for rejected in ack.rejected:
            track.rejections[f"{rejected.field}: {rejected.reason}"] += 1
        for device_ack in ack.device_acks:
            previous = track.acknowledged.get(device_ack.device_id, 0)
            track.acknowledged[device_ack.device_id] = max(previous, device_ack.acked_sequence)

    def _reading(self, r: TelemetryReading) -> Any:
        from shoptwin.v1 import common_pb2, telemetry_pb2

        reading = telemetry_pb2.Reading(
            device_id=r.device_id,
            sequence=r.sequence,
            time=self.clock.timestamp(r.time_s),
            fleet_id=r.fleet_id,
            position=common_pb2.GeoPoint(latitude=r.latitude, longitude=r.longitude),
            speed_mps=min(r.speed_mps, 100.0),
            heading_deg=r.heading_deg % 360.0,
            battery_pct=r.battery_pct,
            door_open=r.door_open,
        )
        if r.temperature_c is not None:
            reading.temperature_c = r.temperature_c
        return reading

    async def _report_stop(self, link: DeviceLink, result: StopResult) -> None:
        from shoptwin.v1 import dispatch_pb2

        track = self.orders.get(result.order_id)
        if track is not None:
            if result.outcome is StopOutcome.FAILED:
                track.state, track.reason = "failed", result.reason
            else:
                track.state, track.late = "delivered", result.late
                if result.late:
                    track.reason = result.reason
        request = dispatch_pb2.ReportStopRequest(
            vehicle_id=result.vehicle_id,
            order_id=result.order_id,
            outcome=dispatch_pb2.STOP_OUTCOME_FAILED
            if result.outcome is StopOutcome.FAILED
            else dispatch_pb2.STOP_OUTCOME_DELIVERED,
            reason=result.reason[:512],
            time=self.clock.timestamp(result.arrival_s),
        )
        for attempt in range(5):
            try:
                await self.caller.call(
                    "dispatch.ReportStop",
                    link,
                    self.dispatch.ReportStop,
                    request,
                )
                return
            except NetworkDropped:
                await asyncio.sleep(0.2 * (attempt + 1))
            except grpc.aio.AioRpcError:
                return

    # -- run -----------------------------------------------------------------------------------

    def _open_orders(self) -> list[OrderTrack]:
        return [
            t
            for t in self.orders.values()
            if t.state not in ("delivered", "failed", "not accepted", "unassignable", "cancelled")
        ]

    async def run(self) -> dict[str, Any]:
        """Run the scenario; returns the live result (see ``render.live_summary``)."""
        self._open()
        wall0 = time.monotonic()
        try:
            await self.align_catalogue()
            fleet_ok = await self.configure_fleet()
            stop_vans = asyncio.Event()
            van_tasks: list[asyncio.Task[None]] = []
            watch_tasks: list[asyncio.Task[None]] = []
            if fleet_ok:
                for van in self.vans:
                    van_tasks.append(asyncio.ensure_future(self._van(van, stop_vans)))
                    watch_tasks.append(asyncio.ensure_future(self._watch_route(van, stop_vans)))
            arrivals = asyncio.ensure_future(self.arrivals())
            reported = self.start_s
            drain_deadline: float | None = None
            while True:
                await asyncio.sleep(0.25)
                now = self.clock.now()
                if self.progress is not None:
                    self.progress(min(now, self.end_s) - reported)
                    reported = min(now, self.end_s)
                if arrivals.done() and self.active_sessions == 0:
                    if drain_deadline is None:
                        drain_deadline = time.monotonic() + self.scenario.live.drain_timeout_s
                    vans_idle = all(not v.busy for v in self.vans)
                    if (
                        (not self._open_orders() and vans_idle)
                        or not fleet_ok
                        or time.monotonic() > drain_deadline
                    ):
                        break
            self.simulated_end_s = self.clock.now()
            stop_vans.set()
            for task in watch_tasks:
                task.cancel()
            # Vans flush their telemetry (resending until acknowledged), within a bound.
            if van_tasks:
                await asyncio.wait(van_tasks, timeout=30.0)
            for task in van_tasks:
                task.cancel()
            await asyncio.gather(*watch_tasks, *van_tasks, *self._tasks, return_exceptions=True)
            await self._final_order_states()
        finally:
            await self._close()
        return self._result(time.monotonic() - wall0)

    async def _final_order_states(self) -> None:
        """Ask dispatch about every order still open, so each ends with a state and reason."""
        from shoptwin.v1 import dispatch_pb2

        for track in self._open_orders():
            try:
                status = await self.dispatch.GetOrderStatus(
                    dispatch_pb2.GetOrderStatusRequest(order_id=track.spec.order_id),
                    timeout=self.scenario.live.deadline_s,
                )
                self.log.record("dispatch.GetOrderStatus", "OK", self.clock.now(), None)
                self._order_status(track, status)
                if track.state not in ("delivered", "failed"):
                    track.reason = f"still {track.state} when the run ended" + (
                        f" ({status.reason})" if status.reason else ""
                    )
            except grpc.aio.AioRpcError as exc:
                self.log.record("dispatch.GetOrderStatus", exc.code().name, self.clock.now(), None)
                track.reason = f"still open when the run ended; GetOrderStatus {exc.code().name}"

    def _result(self, wall_s: float) -> dict[str, Any]:
        by_rpc: dict[str, dict[str, Any]] = {}
        for rpc, counts in self.log.by_rpc.items():
            entry: dict[str, Any] = {k: v for k, v in counts.items() if k != "NETWORK_DROPPED"}
            entry["network_dropped"] = counts.get("NETWORK_DROPPED", 0)
            lat = self.log.latencies_ms.get(rpc, [])
            entry["p50_ms"] = round(float(np.percentile(lat, 50)), 2) if lat else None
            entry["p99_ms"] = round(float(np.percentile(lat, 99)), 2) if lat else None
            by_rpc[rpc] = entry
        orders = Counter[str]()
        reasons = Counter[str]()
        for track in self.orders.values():
            if track.state == "delivered":
                orders["delivered_late" if track.late else "delivered_on_time"] += 1
                if track.late:
                    reasons[f"late: {track.reason or 'after the window'}"] += 1
            elif track.state == "failed":
                orders["failed"] += 1
                reasons[f"failed: {track.reason or 'no reason given'}"] += 1
            elif track.state == "not accepted":
                orders["not_accepted"] += 1
                reasons[f"not accepted: {track.reason}"] += 1
            else:
                orders["failed"] += 1
                reasons[f"{track.state}: {track.reason or 'no reason given'}"] += 1
        windows = math.ceil((self.end_s - self.start_s) / self.log.window_s) + 1
        first = int(self.start_s // self.log.window_s)
        window_ids = list(range(first, first + windows))

        def pct(rpc: str, q: float) -> list[float | None]:
            table = self.log.per_window.get(rpc, {})
            return [
                round(float(np.percentile(table[w], q)), 2) if table.get(w) else None
                for w in window_ids
            ]

        acknowledged = sum(self.telemetry.acknowledged.values())
        affinity = float(np.mean(self.rec_affinity)) if self.rec_affinity else 0.0
        return {
            "scenario": self.scenario.name,
            "seed": self.scenario.seed,
            "speed": self.scenario.live.speed,
            "targets": self.targets.__dict__,
            "simulated_s": self.simulated_end_s - self.start_s,
            "wall_s": round(wall_s, 2),
            "shoppers": self.shoppers,
            "sessions_delayed_by_max_sessions": self.sessions_delayed,
            "calls": {
                "by_rpc": by_rpc,
                "failed_by_network": self.log.failed_by_network,
                "failed_other": self.log.failed_other,
                "other_errors": dict(self.log.other_errors.most_common(20)),
            },
            "orders": {
                "placed": len(self.orders),
                "delivered_on_time": orders["delivered_on_time"],
                "delivered_late": orders["delivered_late"],
                "failed": orders["failed"],
                "not_accepted": orders["not_accepted"],
                "reasons": dict(reasons),
            },
            "telemetry": {
                "generated": self.telemetry.generated,
                "acknowledged": acknowledged,
                "stored": self.telemetry.stored,
                "duplicates": self.telemetry.duplicates,
                "rejected": self.telemetry.rejected,
                "rejections": dict(self.telemetry.rejections.most_common(10)),
                "batches_sent": self.telemetry.batches_sent,
                "batches_dropped_by_network": self.telemetry.batches_dropped,
                "batches_reordered_by_network": self.telemetry.batches_reordered,
            },
            "recommendations": {
                "shown": self.rec_shown,
                "clicked": self.rec_clicked,
                "click_through": self.rec_clicked / self.rec_shown if self.rec_shown else 0.0,
                "mean_affinity": affinity,
                "catalogue_items_aligned": len(self.item_of_id),
            },
            "intent": {
                "classified": self.intent_total,
                "correct": self.intent_correct,
                "out_of_scope": self.intent_out_of_scope,
                "accuracy": self.intent_correct / self.intent_total if self.intent_total else 0.0,
            },
            "series": {
                "window_start_s": [w * self.log.window_s for w in window_ids],
                "latency_p50_ms": {rpc: pct(rpc, 50) for rpc in self.log.per_window},
                "latency_p99_ms": {rpc: pct(rpc, 99) for rpc in self.log.per_window},
                "throughput": {
                    rpc: [
                        len(self.log.per_window[rpc].get(w, [])) / self.log.window_s
                        for w in window_ids
                    ]
                    for rpc in self.log.per_window
                },
                "click_through": [
                    (self.ctr_window[w][1] / self.ctr_window[w][0])
                    if self.ctr_window.get(w, [0])[0]
                    else None
                    for w in window_ids
                ],
                "intent_accuracy": [
                    (self.intent_window[w][1] / self.intent_window[w][0])
                    if self.intent_window.get(w, [0])[0]
                    else None
                    for w in window_ids
                ],
            },
        }


def _point(x: float, y: float) -> Any:
    from simulator.behaviour import Point

    return Point(x, y)


def live_ok(result: dict[str, Any]) -> list[str]:
    """The live-mode bars that did not hold (empty when all hold)."""
    problems = []
    if result["calls"]["failed_other"]:
        problems.append(
            f"{result['calls']['failed_other']} calls failed for reasons other than the 5G model"
        )
    t = result["telemetry"]
    if t["stored"] != t["acknowledged"]:
        problems.append(f"telemetry stored {t['stored']} != acknowledged {t['acknowledged']}")
    return problems


def start_services(
    log_dir: Path, config_path: str | None, state_dir: Path, timeout_s: float = 600.0
) -> Any:
    """Start the four services on their configured ports (building missing default models
    first), as ``shoptwin up`` does, and wait until each is SERVING; returns the suite.

    The services keep this run's state (dispatch plan, telemetry readings, feedback log) in
    ``state_dir``: the scenario's ids repeat from run to run with the same seed, so state left
    by an earlier run would turn this run's orders into duplicates.
    """
    from services.registry import PRODUCT_SERVICES
    from services.suite import start_suite

    state_dir.mkdir(parents=True, exist_ok=True)
    for stale in state_dir.glob("*.sqlite3*"):
        stale.unlink()
    return start_suite(
        [d.name for d in PRODUCT_SERVICES],
        log_dir=log_dir,
        config_path=config_path,
        service_args={
            "dispatch": ["--db-path", str(state_dir / "dispatch.sqlite3")],
            "telemetry": ["--database", str(state_dir / "telemetry.sqlite3")],
            "recommendation": ["--feedback-db", str(state_dir / "feedback.sqlite3")],
        },
        ready_timeout_s=timeout_s,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )


def run_live_command(
    scenario: Scenario,
    targets: LiveTargets,
    *,
    record: dict[str, Any],
    out: Path,
    up: bool,
    log_dir: Path,
    as_json: bool,
    progress: bool,
    config_path: str | None,
) -> int:
    """``shoptwin simulate SCENARIO --mode live``: optionally start the services, run, print the
    summary, write result.json and report.html, stop what it started. Exit 1 when a live bar
    does not hold (failed calls not caused by the 5G model, telemetry stored != acknowledged)."""
    import json

    from tqdm import tqdm

    from simulator.render import live_sections, live_summary
    from simulator.report import write_html, write_json

    suite = None
    if up:
        try:
            suite = start_services(log_dir, config_path, out / "state")
        except (TimeoutError, RuntimeError) as exc:
            print(
                f"shoptwin simulate: services did not start: {exc}; see {log_dir}", file=sys.stderr
            )
            return 1
        targets = LiveTargets(**suite.targets)
    try:
        hours = scenario.live.duration_h
        with tqdm(
            total=hours,
            unit="sim h",
            disable=not progress,
            file=sys.stderr,
            desc=f"{scenario.name} live",
            bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} {unit} [{elapsed}<{remaining}]",
        ) as bar:

            def advance(sim_seconds: float) -> None:
                bar.update(min(sim_seconds / 3600.0, hours - bar.n))

            driver = LiveDriver(scenario, targets, progress=advance)
            result = asyncio.run(driver.run())
    finally:
        if suite is not None:
            codes = suite.stop()
            record["service_exit_codes"] = {
                p.service: c for p, c in zip(suite.processes, codes, strict=True)
            }
    payload = {"run": record, "result": result}
    write_json(out / "result.json", payload)
    write_html(
        out / "report.html", f"ShopTwin live mode: {scenario.name}", record, live_sections(result)
    )
    problems = live_ok(result)
    if as_json:
        print(json.dumps(payload, default=str))
    else:
        print(live_summary(result))
        for error, count in result["calls"]["other_errors"].items():
            print(f"  {count:>6}  {error}")
        print(f"wrote {out / 'result.json'} and {out / 'report.html'}")
        for problem in problems:
            print(f"shoptwin simulate: {problem}", file=sys.stderr)
    return 1 if problems else 0
