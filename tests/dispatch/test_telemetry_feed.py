"""Positions from the telemetry live stream move vehicles, states and ETAs.

The upstream is a test double: a small TelemetryService servicer in this file that implements
WatchLive from a queue (the real telemetry service is built on its own branch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from grpc import aio

from services.dispatch.config import DispatchOptions
from services.runtime.process import free_port
from services.runtime.testing import running_service
from shoptwin.v1 import (
    common_pb2,
    dispatch_pb2,
    dispatch_pb2_grpc,
    telemetry_pb2,
    telemetry_pb2_grpc,
)
from tests.dispatch.test_service import geo, ts, window

DEPOT = (51.5007, -0.1246)


class FakeTelemetry(telemetry_pb2_grpc.TelemetryServiceServicer):
    """WatchLive streams whatever the test puts on ``readings``."""

    def __init__(self) -> None:
        self.readings: asyncio.Queue[telemetry_pb2.Reading] = asyncio.Queue()
        self.subscribers = 0

    async def WatchLive(
        self, request: telemetry_pb2.WatchLiveRequest, context: aio.ServicerContext
    ) -> AsyncIterator[telemetry_pb2.Reading]:
        self.subscribers += 1
        while True:
            yield await self.readings.get()


async def start_fake(port: int) -> tuple[aio.Server, FakeTelemetry]:
    server = aio.server()
    fake = FakeTelemetry()
    telemetry_pb2_grpc.add_TelemetryServiceServicer_to_server(fake, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, fake


def reading(device: str, seq: int, lat: float, lon: float, when: float) -> telemetry_pb2.Reading:
    return telemetry_pb2.Reading(
        device_id=device,
        sequence=seq,
        time=ts(when),
        position=common_pb2.GeoPoint(latitude=lat, longitude=lon),
        speed_mps=8.0,
    )


async def configure(stub: dispatch_pb2_grpc.DispatchServiceStub, now: float) -> None:
    await stub.ConfigureFleet(
        dispatch_pb2.ConfigureFleetRequest(
            depot=dispatch_pb2.Depot(location=geo(*DEPOT), hours=window(now - 60, now + 8 * 3600)),
            vehicles=[dispatch_pb2.Vehicle(vehicle_id="van-1", capacity=10, speed=10.0)],
        )
    )


async def wait_until(predicate: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def dispatch_options(tmp_path: Path, port: int) -> DispatchOptions:
    return DispatchOptions(
        telemetry_target=f"127.0.0.1:{port}",
        db_path=str(tmp_path / "d.sqlite3"),
        solver_executor="thread",
        reopt_time_limit_s=0.1,
        reopt_interval_s=0.05,
    )


async def test_positions_from_the_stream_move_status_and_eta(tmp_path: Path) -> None:
    port = free_port()
    fake_server, fake = await start_fake(port)
    try:
        async with running_service("dispatch", dispatch_options(tmp_path, port)) as svc:
            stub = dispatch_pb2_grpc.DispatchServiceStub(svc.channel)
            now = time.time()
            await configure(stub, now)
            # About 1.2 km west of the depot, window open all day.
            await stub.SubmitOrder(
                dispatch_pb2.SubmitOrderRequest(
                    order=dispatch_pb2.Order(
                        order_id="o1",
                        location=geo(51.5014, -0.1419),
                        demand=1,
                        window=window(now, now + 4 * 3600),
                    )
                )
            )
            planned = await stub.GetOrderStatus(dispatch_pb2.GetOrderStatusRequest(order_id="o1"))
            assert planned.state == dispatch_pb2.ORDER_STATE_ASSIGNED
            await wait_until(lambda: _true(fake.subscribers > 0))
            # Unknown devices and readings without a position are ignored.
            await fake.readings.put(reading("someone-else", 1, 51.6, -0.2, now))
            await fake.readings.put(telemetry_pb2.Reading(device_id="van-1", sequence=1))
            # The van reports from about 5.5 km east of the depot: the ETA moves later.
            await fake.readings.put(reading("van-1", 2, 51.5007, -0.0450, now + 5))

            async def moved() -> bool:
                status = await stub.GetOrderStatus(
                    dispatch_pb2.GetOrderStatusRequest(order_id="o1")
                )
                return status.state == dispatch_pb2.ORDER_STATE_EN_ROUTE

            await wait_until(moved)
            feed = svc.server.app.feed  # type: ignore[attr-defined]

            async def counted() -> bool:  # the count follows the commit
                return bool(feed.readings_applied == 1)

            await wait_until(counted)
            status = await stub.GetOrderStatus(dispatch_pb2.GetOrderStatusRequest(order_id="o1"))
            delay_s = (status.eta.ToNanoseconds() - planned.eta.ToNanoseconds()) / 1e9
            # 6.7 km from the van at 10 m/s instead of 1.2 km from the depot: ~550 s later.
            assert 450 < delay_s < 650
            route = await anext(
                aiter(
                    stub.WatchVehicleRoute(
                        dispatch_pb2.WatchVehicleRouteRequest(vehicle_id="van-1")
                    )
                )
            )
            assert abs(route.position.geo.longitude - (-0.0450)) < 1e-9
    finally:
        await fake_server.stop(0)


async def _true(value: bool) -> bool:
    return value


async def test_service_works_while_telemetry_is_down_and_reconnects(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet
    async with running_service("dispatch", dispatch_options(tmp_path, port)) as svc:
        stub = dispatch_pb2_grpc.DispatchServiceStub(svc.channel)
        now = time.time()
        await configure(stub, now)
        reply = await stub.SubmitOrder(
            dispatch_pb2.SubmitOrderRequest(
                order=dispatch_pb2.Order(order_id="o1", location=geo(51.5014, -0.1419), demand=1)
            )
        )
        assert reply.status.state == dispatch_pb2.ORDER_STATE_ASSIGNED
        assert reply.status.HasField("eta")  # from the plan alone
        feed = svc.server.app.feed  # type: ignore[attr-defined]
        assert not feed.connected
        fake_server, fake = await start_fake(port)
        try:
            await wait_until(lambda: _true(fake.subscribers > 0), timeout_s=30)
            await fake.readings.put(reading("van-1", 1, 51.5010, -0.1300, now + 1))

            async def applied() -> bool:
                return bool(feed.readings_applied == 1)

            await wait_until(applied)
            status = await stub.GetOrderStatus(dispatch_pb2.GetOrderStatusRequest(order_id="o1"))
            assert status.state == dispatch_pb2.ORDER_STATE_EN_ROUTE
        finally:
            await fake_server.stop(0)
        # The upstream goes away again: the service keeps answering.
        again = await stub.GetOrderStatus(dispatch_pb2.GetOrderStatusRequest(order_id="o1"))
        assert again.state == dispatch_pb2.ORDER_STATE_EN_ROUTE
