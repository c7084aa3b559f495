"""DispatchService on a real server: Plan, live dispatch, bad input, restart, watchers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from services.dispatch.config import DispatchOptions
from services.runtime.testing import running_service
from shoptwin.v1 import common_pb2, dispatch_pb2, dispatch_pb2_grpc

HOUR = 3600


def ts(value: float) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(round(value * 1e9))
    return t


def window(start: float, end: float) -> common_pb2.TimeWindow:
    return common_pb2.TimeWindow(start=ts(start), end=ts(end))


def plane(x: float, y: float) -> common_pb2.Location:
    return common_pb2.Location(plane=common_pb2.PlanePoint(x=x, y=y))


def geo(lat: float, lon: float) -> common_pb2.Location:
    return common_pb2.Location(geo=common_pb2.GeoPoint(latitude=lat, longitude=lon))


def options(tmp_path: Path, **overrides: object) -> DispatchOptions:
    values: dict[str, object] = {
        "telemetry_target": "",
        "db_path": str(tmp_path / "dispatch.sqlite3"),
        "solver_executor": "thread",
        "reopt_time_limit_s": 0.2,
        "reopt_interval_s": 0.05,
    }
    values.update(overrides)
    return DispatchOptions(**values)  # type: ignore[arg-type]


def fleet_request(
    now: float, vehicles: int = 2, capacity: int = 10
) -> dispatch_pb2.ConfigureFleetRequest:
    return dispatch_pb2.ConfigureFleetRequest(
        depot=dispatch_pb2.Depot(location=plane(0, 0), hours=window(now - HOUR, now + 8 * HOUR)),
        vehicles=[
            dispatch_pb2.Vehicle(vehicle_id=f"v{i + 1}", capacity=capacity, speed=10.0)
            for i in range(vehicles)
        ],
    )


def plane_order(order_id: str, x: float, y: float, demand: int = 1) -> dispatch_pb2.Order:
    return dispatch_pb2.Order(order_id=order_id, location=plane(x, y), demand=demand)


async def test_plan_returns_routes_times_and_unassigned_reasons() -> None:
    request = dispatch_pb2.PlanRequest(
        depot=dispatch_pb2.Depot(location=plane(0, 0), hours=window(0, 200)),
        vehicles=[dispatch_pb2.Vehicle(vehicle_id=f"v{i}", capacity=20) for i in range(3)],
        orders=[
            dispatch_pb2.Order(
                order_id="1", location=plane(0, 10), demand=10, window=window(40, 60)
            ),
            dispatch_pb2.Order(
                order_id="2", location=plane(0, 20), demand=10, window=window(0, 25)
            ),
            plane_order("3", 10, 0, 10),
            plane_order("4", 20, 0, 10),
            plane_order("heavy", 5, 5, 21),
        ],
        time_limit=duration_pb2.Duration(nanos=300_000_000),
        seed=4,
    )
    async with running_service("dispatch", DispatchOptions(telemetry_target="")) as svc:
        stub = dispatch_pb2_grpc.DispatchServiceStub(svc.channel)
        reply = await stub.Plan(request, timeout=60)
    assert reply.feasible
    assert reply.total_distance == pytest.approx(80.0)
    routes = sorted([s.order_id for s in r.stops] for r in reply.routes)
    assert routes[0] == ["2", "1"]
    assert [(u.order_id, u.reason) for u in reply.unassigned] == [
        ("heavy", dispatch_pb2.UNASSIGNED_REASON_DEMAND_EXCEEDS_CAPACITY)
    ]
    stop_1 = next(s for r in reply.routes for s in r.stops if s.order_id == "1")
    assert 40 <= stop_1.service_start.ToNanoseconds() / 1e9 <= 60


BAD = [
    (
        "window end before start",
        "SubmitOrder",
        dispatch_pb2.SubmitOrderRequest(
            order=dispatch_pb2.Order(order_id="w", location=plane(1, 1), window=window(20, 10))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "order.window.end",
    ),
    (
        "nan coordinate",
        "SubmitOrder",
        dispatch_pb2.SubmitOrderRequest(
            order=dispatch_pb2.Order(order_id="n", location=plane(float("nan"), 1))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "order.location.plane.x",
    ),
    (
        "latitude out of range",
        "SubmitOrder",
        dispatch_pb2.SubmitOrderRequest(
            order=dispatch_pb2.Order(order_id="g", location=geo(91, 0))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "order.location.geo.latitude",
    ),
    (
        "geo order in a plane fleet",
        "SubmitOrder",
        dispatch_pb2.SubmitOrderRequest(
            order=dispatch_pb2.Order(order_id="g", location=geo(51, 0))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "order.location",
    ),
    (
        "missing location",
        "SubmitOrder",
        dispatch_pb2.SubmitOrderRequest(order=dispatch_pb2.Order(order_id="m")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "order.location",
    ),
    (
        "empty order id",
        "SubmitOrder",
        dispatch_pb2.SubmitOrderRequest(order=dispatch_pb2.Order(location=plane(1, 1))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "order.order_id",
    ),
    (
        "duplicate order",
        "SubmitOrder",
        dispatch_pb2.SubmitOrderRequest(order=plane_order("dup", 1, 1)),
        grpc.StatusCode.ALREADY_EXISTS,
        "order.order_id",
    ),
    (
        "unknown order status",
        "GetOrderStatus",
        dispatch_pb2.GetOrderStatusRequest(order_id="x"),
        grpc.StatusCode.NOT_FOUND,
        "order_id",
    ),
    (
        "unknown order cancel",
        "CancelOrder",
        dispatch_pb2.CancelOrderRequest(order_id="x"),
        grpc.StatusCode.NOT_FOUND,
        "order_id",
    ),
    (
        "unknown vehicle",
        "ReportVehiclePosition",
        dispatch_pb2.ReportVehiclePositionRequest(vehicle_id="nope", position=plane(0, 0)),
        grpc.StatusCode.NOT_FOUND,
        "vehicle_id",
    ),
    (
        "unspecified outcome",
        "ReportStop",
        dispatch_pb2.ReportStopRequest(vehicle_id="v1", order_id="dup"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "outcome",
    ),
    (
        "mixed fleet",
        "ConfigureFleet",
        dispatch_pb2.ConfigureFleetRequest(
            depot=dispatch_pb2.Depot(location=plane(0, 0)),
            vehicles=[dispatch_pb2.Vehicle(vehicle_id="a", capacity=1, start=geo(1, 1))],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vehicles[0].start",
    ),
    (
        "duplicate vehicle",
        "ConfigureFleet",
        dispatch_pb2.ConfigureFleetRequest(
            depot=dispatch_pb2.Depot(location=plane(0, 0)),
            vehicles=[dispatch_pb2.Vehicle(vehicle_id="a", capacity=1)] * 2,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vehicles[1].vehicle_id",
    ),
    (
        "zero capacity",
        "ConfigureFleet",
        dispatch_pb2.ConfigureFleetRequest(
            depot=dispatch_pb2.Depot(location=plane(0, 0)),
            vehicles=[dispatch_pb2.Vehicle(vehicle_id="a", capacity=0)],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vehicles[0].capacity",
    ),
    (
        "no vehicles",
        "Plan",
        dispatch_pb2.PlanRequest(depot=dispatch_pb2.Depot(location=plane(0, 0))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vehicles",
    ),
    (
        "time limit too long",
        "Plan",
        dispatch_pb2.PlanRequest(
            depot=dispatch_pb2.Depot(location=plane(0, 0)),
            vehicles=[dispatch_pb2.Vehicle(vehicle_id="a", capacity=1)],
            time_limit=duration_pb2.Duration(seconds=601),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "time_limit",
    ),
    (
        "plan order window",
        "Plan",
        dispatch_pb2.PlanRequest(
            depot=dispatch_pb2.Depot(location=plane(0, 0)),
            vehicles=[dispatch_pb2.Vehicle(vehicle_id="a", capacity=1)],
            orders=[
                plane_order("a", 1, 1),
                dispatch_pb2.Order(order_id="b", location=plane(1, 1), window=window(5, 4)),
            ],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "orders[1].window.end",
    ),
]


async def test_bad_input_names_the_field(tmp_path: Path) -> None:
    async with running_service("dispatch", options(tmp_path)) as svc:
        stub = dispatch_pb2_grpc.DispatchServiceStub(svc.channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.SubmitOrder(dispatch_pb2.SubmitOrderRequest(order=plane_order("a", 1, 1)))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await stub.ConfigureFleet(fleet_request(time.time()))
        await stub.SubmitOrder(dispatch_pb2.SubmitOrderRequest(order=plane_order("dup", 1, 1)))
        for label, method, request, code, field in BAD:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await getattr(stub, method)(request)
            assert info.value.code() == code, label
            assert (info.value.details() or "").startswith(field), (label, info.value.details())
        # Demand above every capacity: stored and reported, never dropped.
        reply = await stub.SubmitOrder(
            dispatch_pb2.SubmitOrderRequest(order=plane_order("heavy", 1, 1, demand=11))
        )
        assert reply.status.state == dispatch_pb2.ORDER_STATE_UNASSIGNABLE
        assert reply.status.reason.startswith("DEMAND_EXCEEDS_CAPACITY")
        plan = await stub.GetPlan(dispatch_pb2.GetPlanRequest())
        assert [(u.order_id, u.reason) for u in plan.unassigned] == [
            ("heavy", dispatch_pb2.UNASSIGNED_REASON_DEMAND_EXCEEDS_CAPACITY)
        ]


async def test_restart_loses_no_order_assignment_or_delivery(tmp_path: Path) -> None:
    now = time.time()
    opts = options(tmp_path, reopt_interval_s=3600.0)
    async with running_service("dispatch", opts) as svc:
        stub = dispatch_pb2_grpc.DispatchServiceStub(svc.channel)
        await stub.ConfigureFleet(fleet_request(now))
        for i in range(6):
            await stub.SubmitOrder(
                dispatch_pb2.SubmitOrderRequest(order=plane_order(f"o{i}", 10 * i + 5, 3 * i))
            )
        first = await stub.GetOrderStatus(dispatch_pb2.GetOrderStatusRequest(order_id="o0"))
        await stub.ReportVehiclePosition(
            dispatch_pb2.ReportVehiclePositionRequest(
                vehicle_id=first.vehicle_id, position=plane(1, 0), time=ts(now + 1)
            )
        )
        route = await anext(
            aiter(
                stub.WatchVehicleRoute(
                    dispatch_pb2.WatchVehicleRouteRequest(vehicle_id=first.vehicle_id)
                )
            )
        )
        delivered_id = route.stops[0].order_id
        await stub.ReportStop(
            dispatch_pb2.ReportStopRequest(
                vehicle_id=first.vehicle_id,
                order_id=delivered_id,
                outcome=dispatch_pb2.STOP_OUTCOME_DELIVERED,
                time=ts(now + 30),
            )
        )
        await stub.CancelOrder(dispatch_pb2.CancelOrderRequest(order_id="o5"))
        before = {
            f"o{i}": await stub.GetOrderStatus(dispatch_pb2.GetOrderStatusRequest(order_id=f"o{i}"))
            for i in range(6)
        }
        plan_before = await stub.GetPlan(dispatch_pb2.GetPlanRequest())
    async with running_service("dispatch", opts) as svc:
        stub = dispatch_pb2_grpc.DispatchServiceStub(svc.channel)
        after = {
            f"o{i}": await stub.GetOrderStatus(dispatch_pb2.GetOrderStatusRequest(order_id=f"o{i}"))
            for i in range(6)
        }
        plan_after = await stub.GetPlan(dispatch_pb2.GetPlanRequest())
    for oid, status in before.items():
        got = after[oid]
        assert (got.state, got.vehicle_id, list(got.stops_before)) == (
            status.state,
            status.vehicle_id,
            list(status.stops_before),
        ), oid
    assert after[delivered_id].state == dispatch_pb2.ORDER_STATE_DELIVERED
    assert after[delivered_id].eta.ToNanoseconds() == pytest.approx((now + 30) * 1e9, abs=1e3)
    assert after["o5"].state == dispatch_pb2.ORDER_STATE_CANCELLED
    assert plan_after.plan_version == plan_before.plan_version
    assert [[s.order_id for s in r.stops] for r in plan_after.routes] == [
        [s.order_id for s in r.stops] for r in plan_before.routes
    ]


async def test_watch_vehicle_route_pushes_when_it_changes(tmp_path: Path) -> None:
    async with running_service("dispatch", options(tmp_path, reopt_interval_s=3600.0)) as svc:
        stub = dispatch_pb2_grpc.DispatchServiceStub(svc.channel)
        await stub.ConfigureFleet(fleet_request(time.time(), vehicles=1))
        stream = stub.WatchVehicleRoute(dispatch_pb2.WatchVehicleRouteRequest(vehicle_id="v1"))
        updates = aiter(stream)
        first = await asyncio.wait_for(anext(updates), 10)
        assert list(first.stops) == []
        await stub.SubmitOrder(dispatch_pb2.SubmitOrderRequest(order=plane_order("a", 3, 4)))
        second = await asyncio.wait_for(anext(updates), 10)
        assert [s.order_id for s in second.stops] == ["a"]
        assert second.plan_version > first.plan_version
        await stub.ReportVehiclePosition(
            dispatch_pb2.ReportVehiclePositionRequest(vehicle_id="v1", position=plane(100, 100))
        )
        third = await asyncio.wait_for(anext(updates), 10)
        assert third.position.plane.x == 100
        assert third.stops[0].arrival.ToNanoseconds() > second.stops[0].arrival.ToNanoseconds()
        stream.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await anext(
                aiter(
                    stub.WatchVehicleRoute(
                        dispatch_pb2.WatchVehicleRouteRequest(vehicle_id="ghost")
                    )
                )
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_background_pass_improves_the_inserted_plan(tmp_path: Path) -> None:
    import random

    rng = random.Random(11)
    async with running_service(
        "dispatch", options(tmp_path, solver_executor="process", reopt_time_limit_s=0.5)
    ) as svc:
        stub = dispatch_pb2_grpc.DispatchServiceStub(svc.channel)
        engine = svc.server.app.engine  # type: ignore[attr-defined]
        await stub.ConfigureFleet(fleet_request(time.time(), vehicles=3, capacity=15))
        for i in range(30):
            reply = await stub.SubmitOrder(
                dispatch_pb2.SubmitOrderRequest(
                    order=plane_order(f"o{i}", rng.uniform(-500, 500), rng.uniform(-500, 500))
                )
            )
            assert reply.status.state == dispatch_pb2.ORDER_STATE_ASSIGNED
        inserted = (await stub.GetPlan(dispatch_pb2.GetPlanRequest())).total_distance
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            passes = engine.passes
            await engine.wait_for_pass(passes, 30)
            plan = await stub.GetPlan(dispatch_pb2.GetPlanRequest())
            if plan.total_distance < inserted * 0.999:
                break
        assert plan.total_distance < inserted
        assert plan.cost_after_last_pass <= plan.cost_before_last_pass
        assert sum(len(r.stops) for r in plan.routes) == 30


async def test_position_that_puts_a_window_at_risk_triggers_a_replan(tmp_path: Path) -> None:
    async with running_service("dispatch", options(tmp_path, reopt_interval_s=3600.0)) as svc:
        stub = dispatch_pb2_grpc.DispatchServiceStub(svc.channel)
        engine = svc.server.app.engine  # type: ignore[attr-defined]
        now = time.time()
        await stub.ConfigureFleet(fleet_request(now, vehicles=1))
        order = plane_order("soon", 3, 4)
        order.window.CopyFrom(window(now, now + 60))
        await stub.SubmitOrder(dispatch_pb2.SubmitOrderRequest(order=order))
        passes = engine.passes
        calm = await stub.ReportVehiclePosition(
            dispatch_pb2.ReportVehiclePositionRequest(vehicle_id="v1", position=plane(1, 1))
        )
        assert not calm.replanned
        # 10 km away at 10 units/s: 1000 s to go, the window closes in 60.
        reply = await stub.ReportVehiclePosition(
            dispatch_pb2.ReportVehiclePositionRequest(vehicle_id="v1", position=plane(10_000, 0))
        )
        assert reply.replanned
        assert await engine.wait_for_pass(passes, 30)
        status = await stub.GetOrderStatus(dispatch_pb2.GetOrderStatusRequest(order_id="soon"))
        assert status.late
        assert status.reason.startswith("expected")
