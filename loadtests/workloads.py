"""What one arrival (open loop) or one iteration of a user (closed loop) does, as plain Python
over a :class:`~loadtests.calls.CallClient`: no Locust, no gevent, so tests run it directly.

Every request is drawn from the simulator's behaviour model (``simulator.behaviour``): shoppers
and their sessions, the catalogue, customer-service messages with known intents, orders, and
vans that drive and report telemetry. Each transaction gets its own generator seeded from the
run's seed and the transaction's key, so the same seed gives the same requests whatever the
timing (given the same answers: a shopper clicks what the service recommended).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import numpy as np
from google.protobuf.duration_pb2 import Duration

from loadtests.arrivals import derive_seed
from loadtests.calls import CallClient
from loadtests.options import LoadTestOptions
from loadtests.protos import (
    SimClock,
    depot,
    geo_location,
    order_message,
    readings_batch,
    vehicle_message,
)
from shoptwin.v1 import (
    dispatch_pb2,
    echo_pb2,
    intent_pb2,
    recommendation_pb2,
    telemetry_pb2,
)
from simulator.behaviour import (
    ActionKind,
    Item,
    OrderSpec,
    Point,
    RecommendedItem,
    Shopper,
    StopOutcome,
    StopResult,
    TelemetryReading,
    VehicleState,
    World,
    make_order,
)

Sleep = Callable[[float], None]

#: The contract's limit on readings in one upload batch.
MAX_BATCH_READINGS = 5000


class Workload(Protocol):
    """One kind of traffic."""

    name: str

    def setup(self, client: CallClient) -> None:
        """Once per Locust process before traffic (e.g. configure the fleet)."""

    def transaction(self, client: CallClient, seed: int, key: str, ordinal: int) -> None:
        """One unit of work: one arrival, or one iteration of a closed-loop user. ``seed``
        fixes its randomness, ``key`` names it uniquely in the run (ids derive from it), and
        ``ordinal`` counts the user's iterations (or the lane's arrivals): the first ones walk
        through every RPC of a mix once, so even short runs exercise them all."""


def pick(rng: np.random.Generator, mix: Sequence[tuple[str, float]], ordinal: int) -> str:
    """The ``ordinal``-th entry of ``mix`` for the first ones, then a draw by weight."""
    if ordinal < len(mix):
        return mix[ordinal][0]
    cdf = np.cumsum([w for _, w in mix])
    return mix[min(int(bisect.bisect_right(cdf.tolist(), rng.random() * cdf[-1])), len(mix) - 1)][0]


@dataclass
class LoadWorld:
    """The behaviour model of one run in one Locust process, and the ids the run uses."""

    options: LoadTestOptions
    world: World
    clock: SimClock
    #: Orders this process submitted, by id: vans drive to them when dispatch routes them.
    orders: dict[str, OrderSpec] = field(default_factory=dict)
    items_by_id: dict[str, Item] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.items_by_id = {item.item_id: item for item in self.world.catalogue.items}

    @classmethod
    def create(cls, options: LoadTestOptions) -> LoadWorld:
        from loadtests.scenarios import world_config

        config = world_config(options.scenario, options.seed, options.vehicles)
        return cls(options, World.create(config), SimClock(options.clock_base_s))

    @property
    def tag(self) -> str:
        return self.options.run_tag

    @property
    def fleet_id(self) -> str:
        return f"{self.tag}-{self.world.config.fleet.fleet_id}"

    def vehicle_id(self, index: int) -> str:
        return f"{self.tag}-van-{index:03d}"

    def vans(self) -> list[VehicleState]:
        """The fleet's vans at the depot when the run starts (the same in every process)."""
        rng = self.world.rng("loadtest-fleet")
        return self.world.vehicles.fleet(rng, self.clock.start_of_run_s)

    def configure_fleet_request(self) -> dispatch_pb2.ConfigureFleetRequest:
        return dispatch_pb2.ConfigureFleetRequest(
            depot=depot(self.world.vehicles.frame, self.clock),
            vehicles=[
                vehicle_message(van.spec, self.vehicle_id(i)) for i, van in enumerate(self.vans())
            ],
        )

    def shopper(self, rng: np.random.Generator, key: str) -> Shopper:
        return self.world.new_shopper(rng, derive_seed(0, key) % 100_000_000)

    def random_cart(self, rng: np.random.Generator, shopper: Shopper) -> list[tuple[Item, int]]:
        catalogue = self.world.catalogue
        lines = int(rng.integers(1, 4))
        return [
            (
                catalogue.sample_item(rng, shopper.draw_category(float(rng.random()))),
                int(rng.integers(1, 4)),
            )
            for _ in range(lines)
        ]

    def order(self, rng: np.random.Generator, order_id: str) -> OrderSpec:
        """A checkout of a random shopper's random cart, placed when the run starts."""
        shopper = self.shopper(rng, order_id)
        return make_order(
            rng,
            self.world.config.orders,
            order_id=order_id,
            shopper_id=shopper.shopper_id,
            location=shopper.location,
            cart=self.random_cart(rng, shopper),
            placed_at_s=self.clock.start_of_run_s,
        )

    def submit_order(self, client: CallClient, order: OrderSpec) -> dispatch_pb2.OrderStatus | None:
        """SubmitOrder; remembers the order for the vans; the tentative status, or None."""
        self.orders[order.order_id] = order
        request = dispatch_pb2.SubmitOrderRequest(
            order=order_message(order, self.world.vehicles.frame, self.clock)
        )
        response = client.unary("dispatch", "SubmitOrder", request)
        return response.status if response is not None else None

    def catalogue_request(
        self, items: Sequence[Item], rng: np.random.Generator
    ) -> recommendation_pb2.UpdateCatalogRequest:
        return recommendation_pb2.UpdateCatalogRequest(
            items=[
                recommendation_pb2.CatalogItem(
                    item_id=item.item_id,
                    category=item.category,
                    price_minor=item.price_minor,
                    in_stock=bool(rng.random() < 0.95),
                    description=item.description,
                )
                for item in items
            ]
        )

    def utterance_request(
        self, rng: np.random.Generator, conversation_id: str
    ) -> intent_pb2.ClassifyRequest:
        bank = self.world.utterances
        intent = bank.intents[int(rng.integers(len(bank.intents)))]
        utterance = bank.sample(rng, intent)
        return intent_pb2.ClassifyRequest(
            text=utterance.text, language="en", conversation_id=conversation_id, top_k=3
        )

    def test_device_readings(
        self, rng: np.random.Generator, device_index: int, count: int
    ) -> tuple[VehicleState, list[TelemetryReading]]:
        """``count`` readings of a van of the fleet driving to a random address."""
        van = self.vans()[device_index % len(self.vans())]
        shopper = self.shopper(rng, f"dev-{device_index}-{count}")
        van.route.append(
            make_order(
                rng,
                self.world.config.orders,
                order_id="telemetry-test",
                shopper_id=shopper.shopper_id,
                location=shopper.location,
                cart=self.random_cart(rng, shopper),
                placed_at_s=self.clock.start_of_run_s,
            )
        )
        readings: list[TelemetryReading] = []
        interval = self.world.config.fleet.telemetry_interval_s
        while len(readings) < count:
            new, _ = self.world.vehicles.advance(rng, van, interval)
            readings.extend(new)
        return van, readings[:count]


def feedback_event(
    event_id: str,
    user_id: str,
    item_id: str,
    kind: recommendation_pb2.FeedbackType.ValueType,
    quantity: int = 0,
) -> recommendation_pb2.FeedbackEvent:
    return recommendation_pb2.FeedbackEvent(
        event_id=event_id, user_id=user_id, item_id=item_id, type=kind, quantity=quantity
    )


class EchoWorkload:
    """One Echo call with a fixed-size payload: the bare gRPC round trip."""

    name = "echo"

    def __init__(self, options: LoadTestOptions) -> None:
        self._request = echo_pb2.EchoRequest(payload=b"x" * options.echo_payload_bytes)

    def setup(self, client: CallClient) -> None:
        del client

    def transaction(self, client: CallClient, seed: int, key: str, ordinal: int) -> None:
        client.unary("echo", "Echo", self._request)


class RecommendationWorkload:
    """Shoppers of the behaviour model asking for recommendations and sending feedback."""

    name = "recommendation"
    MIX: tuple[tuple[str, float], ...] = (
        ("Recommend", 50),
        ("SimilarItems", 20),
        ("RecordFeedback", 12),
        ("StreamFeedback", 10),
        ("GetModelInfo", 4),
        ("UpdateCatalog", 3),
        ("ReloadModel", 1),
    )

    def __init__(self, load_world: LoadWorld) -> None:
        self.lw = load_world

    def setup(self, client: CallClient) -> None:
        """Tell the service the catalogue's categories, prices and stock (its filters use
        them)."""
        rng = self.lw.world.rng("loadtest-catalogue")
        client.unary(
            "recommendation",
            "UpdateCatalog",
            self.lw.catalogue_request(self.lw.world.catalogue.items, rng),
        )

    def recommend(
        self, client: CallClient, rng: np.random.Generator, shopper: Shopper
    ) -> recommendation_pb2.RecommendResponse | None:
        filter_ = recommendation_pb2.RecommendFilter(exclude_purchased=bool(rng.random() < 0.5))
        if rng.random() < 0.2:
            filter_.categories.extend(
                self.lw.world.catalogue.categories[c] for c in shopper.favourite_categories(2)
            )
        if rng.random() < 0.2:
            filter_.in_stock_only = True
        request = recommendation_pb2.RecommendRequest(user_id=shopper.shopper_id, k=10)
        request.filter.CopyFrom(filter_)
        return client.unary("recommendation", "Recommend", request)

    def events(
        self, rng: np.random.Generator, shopper: Shopper, key: str
    ) -> list[recommendation_pb2.FeedbackEvent]:
        """Views, clicks, add-to-carts and purchases of a shopper's browsing."""
        catalogue = self.lw.world.catalogue
        kinds = (
            recommendation_pb2.FEEDBACK_TYPE_VIEW,
            recommendation_pb2.FEEDBACK_TYPE_CLICK,
            recommendation_pb2.FEEDBACK_TYPE_ADD_TO_CART,
            recommendation_pb2.FEEDBACK_TYPE_PURCHASE,
        )
        out = []
        for n in range(int(rng.integers(1, 16))):
            item = catalogue.sample_item(rng, shopper.draw_category(float(rng.random())))
            kind = kinds[min(int(rng.geometric(0.55)) - 1, 3)]
            quantity = int(rng.integers(1, 4)) if kind == kinds[3] else 0
            out.append(
                feedback_event(
                    f"{self.lw.tag}-{key}-e{n}", shopper.shopper_id, item.item_id, kind, quantity
                )
            )
        return out

    def transaction(self, client: CallClient, seed: int, key: str, ordinal: int) -> None:
        rng = np.random.default_rng(seed)
        rpc = pick(rng, self.MIX, ordinal)
        shopper = self.lw.shopper(rng, key)
        if rpc == "Recommend":
            self.recommend(client, rng, shopper)
        elif rpc == "SimilarItems":
            # An item page for an item the model ranked (so the model knows it); without an
            # answer, a catalogue item, which may be new to the model (NOT_FOUND by contract).
            answer = self.recommend(client, rng, shopper)
            if answer is not None and answer.items:
                item_id = answer.items[int(rng.integers(len(answer.items)))].item_id
                ok: tuple[grpc.StatusCode, ...] = ()
            else:
                catalogue = self.lw.world.catalogue
                item_id = catalogue.sample_item(rng, shopper.draw_category(rng.random())).item_id
                ok = (grpc.StatusCode.NOT_FOUND,)
            client.unary(
                "recommendation",
                "SimilarItems",
                recommendation_pb2.SimilarItemsRequest(item_id=item_id, k=10),
                ok_codes=ok,
            )
        elif rpc == "RecordFeedback":
            events = self.events(rng, shopper, key)
            client.unary(
                "recommendation",
                "RecordFeedback",
                recommendation_pb2.RecordFeedbackRequest(events=events),
            )
        elif rpc == "StreamFeedback":
            client.exchange(
                "recommendation", "StreamFeedback", iter(self.events(rng, shopper, key))
            )
        elif rpc == "GetModelInfo":
            client.unary("recommendation", "GetModelInfo", recommendation_pb2.GetModelInfoRequest())
        elif rpc == "UpdateCatalog":
            items = self.lw.world.catalogue.items
            start = int(rng.integers(len(items)))
            client.unary(
                "recommendation",
                "UpdateCatalog",
                self.lw.catalogue_request(items[start : start + 50], rng),
            )
        elif rpc == "ReloadModel":
            client.unary("recommendation", "ReloadModel", recommendation_pb2.ReloadModelRequest())


class IntentWorkload:
    """Customer-service messages (with known intents) from the behaviour model's bank."""

    name = "intent"
    MIX: tuple[tuple[str, float], ...] = (
        ("Classify", 80),
        ("ClassifyBatch", 15),
        ("GetModelInfo", 5),
    )

    def __init__(self, load_world: LoadWorld) -> None:
        self.lw = load_world

    def setup(self, client: CallClient) -> None:
        del client

    def transaction(self, client: CallClient, seed: int, key: str, ordinal: int) -> None:
        rng = np.random.default_rng(seed)
        rpc = pick(rng, self.MIX, ordinal)
        conversation = f"{self.lw.tag}-{key}"
        if rpc == "Classify":
            client.unary("intent", "Classify", self.lw.utterance_request(rng, conversation))
        elif rpc == "ClassifyBatch":
            size = int(rng.integers(8, 33))
            batch = [self.lw.utterance_request(rng, f"{conversation}-{i}") for i in range(size)]
            client.unary("intent", "ClassifyBatch", intent_pb2.ClassifyBatchRequest(requests=batch))
        else:
            client.unary("intent", "GetModelInfo", intent_pb2.GetIntentModelInfoRequest())


class DispatchWorkload:
    """Orders of the behaviour model's shoppers, and the fleet's vans seen from dispatch."""

    name = "dispatch"
    MIX: tuple[tuple[str, float], ...] = (
        ("SubmitOrder", 30),
        ("GetOrderStatus", 20),
        ("ReportVehiclePosition", 15),
        ("GetPlan", 8),
        ("CancelOrder", 5),
        ("ReportStop", 5),
        ("WatchVehicleRoute", 5),
        ("Plan", 2),
        ("ConfigureFleet", 2),
    )

    def __init__(self, load_world: LoadWorld) -> None:
        self.lw = load_world

    def setup(self, client: CallClient) -> None:
        """The fleet of the behaviour model (every process sends the same; it is idempotent)."""
        client.unary("dispatch", "ConfigureFleet", self.lw.configure_fleet_request())

    def transaction(self, client: CallClient, seed: int, key: str, ordinal: int) -> None:
        rng = np.random.default_rng(seed)
        rpc = pick(rng, self.MIX, ordinal)
        lw = self.lw
        order_id = f"{lw.tag}-{key}-o"
        van = int(rng.integers(lw.options.vehicles))
        if rpc in ("SubmitOrder", "GetOrderStatus", "CancelOrder", "ReportStop"):
            status = lw.submit_order(client, lw.order(rng, order_id))
            if status is None:
                return
            if rpc == "GetOrderStatus":
                client.unary(
                    "dispatch",
                    "GetOrderStatus",
                    dispatch_pb2.GetOrderStatusRequest(order_id=order_id),
                )
            elif rpc == "CancelOrder":
                client.unary(
                    "dispatch", "CancelOrder", dispatch_pb2.CancelOrderRequest(order_id=order_id)
                )
            elif rpc == "ReportStop":
                vehicle_id, stop_order_id = status.vehicle_id, order_id
                if not vehicle_id:
                    # This order found no van (a full fleet under load): deliver the first
                    # stop some van has instead, so the report is still a real one.
                    plan = client.unary("dispatch", "GetPlan", dispatch_pb2.GetPlanRequest())
                    route = next((r for r in plan.routes if r.stops), None) if plan else None
                    if route is None:
                        return
                    vehicle_id, stop_order_id = route.vehicle_id, route.stops[0].order_id
                client.unary(
                    "dispatch",
                    "ReportStop",
                    dispatch_pb2.ReportStopRequest(
                        vehicle_id=vehicle_id,
                        order_id=stop_order_id,
                        outcome=dispatch_pb2.STOP_OUTCOME_DELIVERED,
                    ),
                    # A van's own report may have closed the stop meanwhile.
                    ok_codes=(grpc.StatusCode.FAILED_PRECONDITION,),
                )
        elif rpc == "ReportVehiclePosition":
            radius = lw.world.config.shoppers.area_radius_m
            point = Point(*(float(v) for v in rng.uniform(-radius, radius, 2)))
            client.unary(
                "dispatch",
                "ReportVehiclePosition",
                dispatch_pb2.ReportVehiclePositionRequest(
                    vehicle_id=lw.vehicle_id(van),
                    position=geo_location(lw.world.vehicles.frame, point),
                    speed=float(rng.uniform(0, 12)),
                    time=lw.clock.timestamp(lw.clock.start_of_run_s),
                ),
            )
        elif rpc == "GetPlan":
            client.unary("dispatch", "GetPlan", dispatch_pb2.GetPlanRequest())
        elif rpc == "WatchVehicleRoute":
            client.watch(
                "dispatch",
                "WatchVehicleRoute",
                dispatch_pb2.WatchVehicleRouteRequest(vehicle_id=lw.vehicle_id(van)),
                max_messages=1,
                max_seconds=3.0,
            )
        elif rpc == "Plan":
            fleet = lw.configure_fleet_request()
            orders = [lw.order(rng, f"{order_id}-{i}") for i in range(20)]
            frame = lw.world.vehicles.frame
            client.unary(
                "dispatch",
                "Plan",
                dispatch_pb2.PlanRequest(
                    depot=fleet.depot,
                    vehicles=fleet.vehicles[:3],
                    orders=[order_message(o, frame, lw.clock) for o in orders],
                    time_limit=Duration(nanos=200_000_000),
                    seed=int(rng.integers(1 << 31)),
                ),
            )
        elif rpc == "ConfigureFleet":
            client.unary("dispatch", "ConfigureFleet", lw.configure_fleet_request())


class TelemetryWorkload:
    """Van readings from the behaviour model, and the queries and watches on them."""

    name = "telemetry"
    MIX: tuple[tuple[str, float], ...] = (
        ("Ingest", 35),
        ("GetLatest", 20),
        ("Upload", 15),
        ("QueryRange", 10),
        ("ListAlerts", 10),
        ("WatchLive", 5),
        ("WatchAlerts", 5),
    )

    def __init__(self, load_world: LoadWorld) -> None:
        self.lw = load_world

    def setup(self, client: CallClient) -> None:
        del client

    def readings(
        self, rng: np.random.Generator, device_id: str, count: int, batch_id: int
    ) -> tuple[telemetry_pb2.UploadRequest, list[TelemetryReading]]:
        """A batch of ``count`` readings of a test device (sequences 1..count)."""
        _van, readings = self.lw.test_device_readings(rng, int(rng.integers(1 << 16)), count)
        batch = readings_batch(
            batch_id,
            readings,
            self.lw.clock,
            device_id,
            self.lw.options.fleet_speedup,
            fleet_id=self.lw.fleet_id,
        )
        return batch, readings

    def transaction(self, client: CallClient, seed: int, key: str, ordinal: int) -> None:
        rng = np.random.default_rng(seed)
        rpc = pick(rng, self.MIX, ordinal)
        lw = self.lw
        device_id = f"{lw.tag}-{key}-dev"
        if rpc == "Ingest":
            batch, _ = self.readings(rng, device_id, int(rng.integers(1, 25)), 1)
            client.unary("telemetry", "Ingest", batch)
        elif rpc == "Upload":
            count = int(rng.integers(2, 6))
            batch, _ = self.readings(rng, device_id, count * 6, 0)

            def batches() -> Iterator[telemetry_pb2.UploadRequest]:
                for n in range(count):
                    yield telemetry_pb2.UploadRequest(
                        batch_id=n + 1, readings=batch.readings[n * 6 : (n + 1) * 6]
                    )

            client.exchange("telemetry", "Upload", batches())
        elif rpc == "QueryRange":
            batch, _ = self.readings(rng, device_id, 12, 1)
            if client.unary("telemetry", "Ingest", batch) is None:
                return
            first, last = batch.readings[0].time, batch.readings[-1].time
            request = telemetry_pb2.QueryRangeRequest(device_id=device_id, limit=1000)
            request.start.CopyFrom(first)
            request.end.seconds = last.seconds + 1
            client.unary("telemetry", "QueryRange", request)
        elif rpc == "GetLatest":
            if rng.random() < 0.5:
                latest = telemetry_pb2.GetLatestRequest(fleet_id=lw.fleet_id)
            else:
                latest = telemetry_pb2.GetLatestRequest(
                    device_ids=[lw.vehicle_id(i) for i in range(lw.options.vehicles)]
                )
            client.unary("telemetry", "GetLatest", latest)
        elif rpc == "ListAlerts":
            client.unary("telemetry", "ListAlerts", telemetry_pb2.ListAlertsRequest())
        elif rpc == "WatchLive":
            client.watch(
                "telemetry",
                "WatchLive",
                telemetry_pb2.WatchLiveRequest(fleet_id=lw.fleet_id),
                max_messages=5,
                max_seconds=2.0,
            )
        elif rpc == "WatchAlerts":
            client.watch(
                "telemetry",
                "WatchAlerts",
                telemetry_pb2.WatchAlertsRequest(fleet_id=lw.fleet_id),
                max_messages=1,
                max_seconds=1.0,
            )


class JourneyWorkload:
    """One shopper's session, drawn step by step from the simulator's session model:
    browse (SimilarItems), recommend (Recommend), click and add to cart (feedback), checkout
    (PURCHASE feedback, SubmitOrder, GetOrderStatus) and customer-service messages (Classify).
    Feedback goes over StreamFeedback when the session ends."""

    name = "journey"

    def __init__(self, load_world: LoadWorld, sleep: Sleep = time.sleep) -> None:
        self.lw = load_world
        self.sleep = sleep
        self.recommendation = RecommendationWorkload(load_world)
        self.dispatch = DispatchWorkload(load_world)

    def setup(self, client: CallClient) -> None:
        self.recommendation.setup(client)
        self.dispatch.setup(client)

    def transaction(self, client: CallClient, seed: int, key: str, ordinal: int) -> None:
        lw = self.lw
        world = lw.world
        rng = np.random.default_rng(seed)
        shopper = lw.shopper(rng, key)
        session_id = f"{lw.tag}-{key}"
        session = world.sessions.start(shopper, session_id, lw.clock.start_of_run_s)
        user = shopper.shopper_id
        events: list[recommendation_pb2.FeedbackEvent] = []
        by_id = lw.items_by_id
        fb = recommendation_pb2

        def event(
            item_id: str, kind: recommendation_pb2.FeedbackType.ValueType, quantity: int = 0
        ) -> None:
            events.append(
                feedback_event(f"{session_id}-e{len(events)}", user, item_id, kind, quantity)
            )

        while not session.done:
            action = world.sessions.next_action(rng, session)
            if lw.options.think_scale > 0:
                self.sleep(action.think_s * lw.options.think_scale)
            if action.kind is ActionKind.BROWSE and action.item_id:
                event(action.item_id, fb.FEEDBACK_TYPE_VIEW)
                client.unary(
                    "recommendation",
                    "SimilarItems",
                    fb.SimilarItemsRequest(item_id=action.item_id, k=10),
                    # A catalogue item the model has not seen is NOT_FOUND by contract.
                    ok_codes=(grpc.StatusCode.NOT_FOUND,),
                )
            elif action.kind is ActionKind.RECOMMEND:
                answer = client.unary(
                    "recommendation",
                    "Recommend",
                    fb.RecommendRequest(user_id=user, k=action.k or 10),
                )
                if answer is not None:
                    session.observe_recommendations(
                        [
                            RecommendedItem(s.item_id, s.category, by_id.get(s.item_id))
                            for s in answer.items
                        ]
                    )
            elif action.kind is ActionKind.CLICK and action.item_id:
                event(action.item_id, fb.FEEDBACK_TYPE_CLICK)
            elif action.kind is ActionKind.ADD_TO_CART and action.item_id:
                event(action.item_id, fb.FEEDBACK_TYPE_ADD_TO_CART, action.quantity)
            elif action.kind is ActionKind.CHECKOUT and action.order is not None:
                for item, quantity in action.cart:
                    event(item.item_id, fb.FEEDBACK_TYPE_PURCHASE, quantity)
                if lw.submit_order(client, action.order) is not None:
                    client.unary(
                        "dispatch",
                        "GetOrderStatus",
                        dispatch_pb2.GetOrderStatusRequest(order_id=action.order.order_id),
                    )
            elif action.kind is ActionKind.SUPPORT and action.utterance is not None:
                text = action.utterance.text
                client.unary(
                    "intent",
                    "Classify",
                    intent_pb2.ClassifyRequest(
                        text=text, language="en", conversation_id=session_id, top_k=3
                    ),
                )
        if events:
            client.exchange("recommendation", "StreamFeedback", iter(events))


@dataclass
class VanDriver:
    """One van of the fleet for the whole run: drives its route in the behaviour model,
    streams its readings over Upload (sequence numbers continue across streams; readings not
    yet acknowledged are sent again), watches its route from dispatch and reports stops."""

    lw: LoadWorld
    index: int
    sleep: Sleep = time.sleep
    rng: np.random.Generator = field(init=False)
    van: VehicleState = field(init=False)
    pending: list[TelemetryReading] = field(default_factory=list)
    finished: list[StopResult] = field(default_factory=list)
    batch_id: int = 0
    routed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(derive_seed(self.lw.options.seed, "van", self.index))
        self.van = self.lw.vans()[self.index % len(self.lw.vans())]

    @property
    def vehicle_id(self) -> str:
        return self.lw.vehicle_id(self.index)

    def watch_route(self, client: CallClient) -> None:
        """Take the stops dispatch routes to this van (those whose orders this process
        knows: it needs their addresses to drive there)."""
        result = client.watch(
            "dispatch",
            "WatchVehicleRoute",
            dispatch_pb2.WatchVehicleRouteRequest(vehicle_id=self.vehicle_id),
            max_messages=1,
            max_seconds=3.0,
        )
        for route in result.messages:
            for stop in route.stops:
                order = self.lw.orders.get(stop.order_id)
                if order is not None and stop.order_id not in self.routed:
                    self.routed.add(stop.order_id)
                    self.van.route.append(order)

    def upload(self, client: CallClient, batches: int) -> None:
        """One Upload stream of ``batches`` batches, paced in (sped-up) real time."""
        fleet = self.lw.world.config.fleet
        speedup = max(self.lw.options.fleet_speedup, 1e-6)
        period = fleet.telemetry_interval_s * fleet.batch_readings / speedup

        def stream() -> Iterator[telemetry_pb2.UploadRequest]:
            # Readings of earlier streams not yet acknowledged go first, once per stream.
            resend = list(self.pending)
            for n in range(batches):
                if n:
                    self.sleep(period)
                readings, results = self.lw.world.vehicles.advance(
                    self.rng, self.van, fleet.telemetry_interval_s * fleet.batch_readings
                )
                self.finished.extend(results)
                self.pending = [*self.pending, *readings][-MAX_BATCH_READINGS:]
                batch = [*resend, *readings][-MAX_BATCH_READINGS:]
                resend = []
                self.batch_id += 1
                yield readings_batch(
                    self.batch_id,
                    batch,
                    self.lw.clock,
                    self.vehicle_id,
                    speedup,
                    fleet_id=self.lw.fleet_id,
                )

        acks = client.exchange("telemetry", "Upload", stream())
        acked = 0
        for ack in acks:
            for device in ack.device_acks:
                if device.device_id == self.vehicle_id:
                    acked = max(acked, int(device.acked_sequence))
        self.pending = [r for r in self.pending if r.sequence > acked]

    def report(self, client: CallClient) -> None:
        """Stops finished since the last report, and the van's position."""
        for result in self.finished:
            outcome = (
                dispatch_pb2.STOP_OUTCOME_DELIVERED
                if result.outcome is StopOutcome.DELIVERED
                else dispatch_pb2.STOP_OUTCOME_FAILED
            )
            client.unary(
                "dispatch",
                "ReportStop",
                dispatch_pb2.ReportStopRequest(
                    vehicle_id=self.vehicle_id,
                    order_id=result.order_id,
                    outcome=outcome,
                    reason=result.reason[:512],
                ),
                # Re-planning may have moved the stop to another van since this one last
                # looked at its route: dispatch then refuses the report, as it should.
                ok_codes=(grpc.StatusCode.FAILED_PRECONDITION,),
            )
        self.finished.clear()
        client.unary(
            "dispatch",
            "ReportVehiclePosition",
            dispatch_pb2.ReportVehiclePositionRequest(
                vehicle_id=self.vehicle_id,
                position=geo_location(self.lw.world.vehicles.frame, self.van.position),
                speed=self.van.leg_speed_mps if self.van.leg_target is not None else 0.0,
            ),
        )

    def segment(self, client: CallClient, batches: int = 5) -> None:
        """One stretch of the van's shift: watch the route, stream readings, report."""
        self.watch_route(client)
        self.upload(client, batches)
        self.report(client)


class FleetWorkload:
    """Vans of the behaviour model: each Locust fleet user drives one :class:`VanDriver`."""

    name = "fleet"

    def __init__(self, load_world: LoadWorld, sleep: Sleep = time.sleep) -> None:
        self.lw = load_world
        self.sleep = sleep
        self.dispatch = DispatchWorkload(load_world)

    def setup(self, client: CallClient) -> None:
        self.dispatch.setup(client)

    def driver(self, index: int) -> VanDriver:
        return VanDriver(self.lw, index, self.sleep)

    def transaction(self, client: CallClient, seed: int, key: str, ordinal: int) -> None:
        """Open loop has no vans of its own: a fleet arrival is one segment of a van."""
        self.driver(int(np.random.default_rng(seed).integers(self.lw.options.vehicles))).segment(
            client
        )


class SuiteWorkload:
    """Open-loop mix over the whole suite: mostly shopper journeys, plus direct traffic to each
    service. The first arrivals go round the services so every RPC is reached early."""

    name = "suite"
    MIX: tuple[tuple[str, float], ...] = (
        ("journey", 70),
        ("recommendation", 8),
        ("intent", 8),
        ("dispatch", 7),
        ("telemetry", 7),
    )

    def __init__(self, parts: dict[str, Workload]) -> None:
        self.parts = parts

    def setup(self, client: CallClient) -> None:
        for name in ("recommendation", "dispatch"):
            self.parts[name].setup(client)

    def transaction(self, client: CallClient, seed: int, key: str, ordinal: int) -> None:
        kinds = [name for name, _ in self.MIX]
        rounds = 10
        if ordinal < rounds * len(kinds):
            kind, sub = kinds[ordinal % len(kinds)], ordinal // len(kinds)
        else:
            kind, sub = pick(np.random.default_rng(seed), self.MIX, len(kinds)), ordinal
        self.parts[kind].transaction(client, derive_seed(seed, kind), key, sub)


def build_workload(
    name: str,
    options: LoadTestOptions,
    load_world: LoadWorld | None = None,
    sleep: Sleep = time.sleep,
) -> Workload:
    """The workload called ``name`` for a run's options (sharing ``load_world`` if given)."""
    if name == "echo":
        return EchoWorkload(options)
    lw = load_world or LoadWorld.create(options)
    if name == "recommendation":
        return RecommendationWorkload(lw)
    if name == "intent":
        return IntentWorkload(lw)
    if name == "dispatch":
        return DispatchWorkload(lw)
    if name == "telemetry":
        return TelemetryWorkload(lw)
    if name == "journey":
        return JourneyWorkload(lw, sleep)
    if name == "fleet":
        return FleetWorkload(lw, sleep)
    if name == "suite":
        parts: dict[str, Workload] = {
            "journey": JourneyWorkload(lw, sleep),
            "recommendation": RecommendationWorkload(lw),
            "intent": IntentWorkload(lw),
            "dispatch": DispatchWorkload(lw),
            "telemetry": TelemetryWorkload(lw),
        }
        return SuiteWorkload(parts)
    raise KeyError(f"unknown workload {name!r}")
