"""End to end: a van's readings uploaded to the real telemetry service reach the real dispatch
service through telemetry's WatchLive stream, and move the van's position, its order's state
and the ETA."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

from services.dispatch.config import DispatchOptions
from services.runtime.testing import running_service
from services.telemetry.config import TelemetryOptions
from shoptwin.v1 import (
    common_pb2,
    dispatch_pb2,
    dispatch_pb2_grpc,
    telemetry_pb2,
    telemetry_pb2_grpc,
)
from tests.dispatch.test_service import geo, ts, window
from tests.dispatch.test_telemetry_feed import wait_until

DEPOT = (51.5007, -0.1246)


async def test_telemetry_readings_move_dispatch_eta(tmp_path: Path) -> None:
    telemetry_options = TelemetryOptions(database=tmp_path / "telemetry.sqlite3")
    async with running_service("telemetry", telemetry_options) as telemetry:
        dispatch_options = DispatchOptions(
            telemetry_target=telemetry.target,
            db_path=str(tmp_path / "dispatch.sqlite3"),
            solver_executor="thread",
            reopt_time_limit_s=0.1,
            reopt_interval_s=0.05,
        )
        async with running_service("dispatch", dispatch_options) as dispatch:
            stub = dispatch_pb2_grpc.DispatchServiceStub(dispatch.channel)
            now = time.time()
            await stub.ConfigureFleet(
                dispatch_pb2.ConfigureFleetRequest(
                    depot=dispatch_pb2.Depot(
                        location=geo(*DEPOT), hours=window(now - 60, now + 8 * 3600)
                    ),
                    vehicles=[dispatch_pb2.Vehicle(vehicle_id="van-1", capacity=10, speed=10.0)],
                )
            )
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
            feed = dispatch.server.app.feed  # type: ignore[attr-defined]

            async def subscribed() -> bool:
                return bool(feed.connected)

            await wait_until(subscribed, timeout_s=30)

            # The van uploads through the real ingestion path; its device id is the vehicle id.
            async def batches() -> AsyncIterator[telemetry_pb2.UploadRequest]:
                yield telemetry_pb2.UploadRequest(
                    batch_id=1,
                    readings=[
                        telemetry_pb2.Reading(
                            device_id="van-1",
                            sequence=1,
                            time=ts(time.time()),
                            fleet_id="vans",
                            position=common_pb2.GeoPoint(latitude=51.5007, longitude=-0.0450),
                            speed_mps=8.0,
                        )
                    ],
                )

            upload = telemetry_pb2_grpc.TelemetryServiceStub(telemetry.channel).Upload(batches())
            acks = [ack async for ack in upload]
            assert acks[0].stored == 1
            assert acks[0].device_acks[0].acked_sequence == 1

            async def moved() -> bool:
                status = await stub.GetOrderStatus(
                    dispatch_pb2.GetOrderStatusRequest(order_id="o1")
                )
                return bool(
                    status.state == dispatch_pb2.ORDER_STATE_EN_ROUTE
                    and status.eta.ToNanoseconds() > planned.eta.ToNanoseconds()
                )

            await wait_until(moved, timeout_s=30)
            status = await stub.GetOrderStatus(dispatch_pb2.GetOrderStatusRequest(order_id="o1"))
            delay_s = (status.eta.ToNanoseconds() - planned.eta.ToNanoseconds()) / 1e9
            # 6.7 km from the van's reported position at 10 m/s instead of 1.2 km from the
            # depot: about 550 s later.
            assert 450 < delay_s < 650
            route = await anext(
                aiter(
                    stub.WatchVehicleRoute(
                        dispatch_pb2.WatchVehicleRouteRequest(vehicle_id="van-1")
                    )
                )
            )
            assert abs(route.position.geo.longitude - (-0.0450)) < 1e-9
