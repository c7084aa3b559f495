"""End to end: a shopper asks intent about an order that the real dispatch service planned.

Starts the real dispatch service, configures a fleet (depot and vans in London, geo locations),
submits an order, then asks the intent service "where is my order <id>?" and expects the
status dispatch itself reports for that order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import timestamp_pb2

from services.dispatch.config import DispatchOptions
from services.intent.config import IntentOptions
from services.runtime.testing import running_service
from shoptwin.v1 import common_pb2, dispatch_pb2, dispatch_pb2_grpc, intent_pb2, intent_pb2_grpc
from tests.intent.conftest import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.getbasetemp() / "intent-tiny-model")


def ts(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def geo(lat: float, lon: float) -> common_pb2.Location:
    return common_pb2.Location(geo=common_pb2.GeoPoint(latitude=lat, longitude=lon))


async def test_where_is_my_order_answers_with_dispatch_status(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    hours = common_pb2.TimeWindow(start=ts(now), end=ts(now + timedelta(hours=12)))
    order_id = "113542617735902"
    async with running_service(
        "dispatch", DispatchOptions(telemetry_target=""), data_dir=tmp_path / "dispatch"
    ) as dispatch:
        stub = dispatch_pb2_grpc.DispatchServiceStub(dispatch.channel)
        await stub.ConfigureFleet(
            dispatch_pb2.ConfigureFleetRequest(
                depot=dispatch_pb2.Depot(location=geo(51.5074, -0.1278), hours=hours),
                vehicles=[
                    dispatch_pb2.Vehicle(vehicle_id="van-1", capacity=100),
                    dispatch_pb2.Vehicle(vehicle_id="van-2", capacity=100),
                ],
            )
        )
        submitted = await stub.SubmitOrder(
            dispatch_pb2.SubmitOrderRequest(
                order=dispatch_pb2.Order(
                    order_id=order_id,
                    location=geo(51.5155, -0.0922),
                    demand=3,
                    window=common_pb2.TimeWindow(
                        start=ts(now + timedelta(hours=1)), end=ts(now + timedelta(hours=6))
                    ),
                )
            )
        )
        assert submitted.status.state in (
            dispatch_pb2.ORDER_STATE_ASSIGNED,
            dispatch_pb2.ORDER_STATE_EN_ROUTE,
        )
        expected = await stub.GetOrderStatus(dispatch_pb2.GetOrderStatusRequest(order_id=order_id))

        options = IntentOptions(model_dir=tiny_model_dir, dispatch_target=dispatch.target)
        async with running_service("intent", options, data_dir=tmp_path / "intent") as intent:
            reply = await intent_pb2_grpc.IntentServiceStub(intent.channel).Classify(
                intent_pb2.ClassifyRequest(text=f"where is my order {order_id}?")
            )

    assert reply.intent.intent == "track_order"
    lookup = reply.order_lookup
    assert lookup.outcome == intent_pb2.ORDER_LOOKUP_OUTCOME_FOUND, lookup.detail
    assert lookup.order_id == order_id
    assert lookup.status.state == expected.state
    assert lookup.status.vehicle_id == expected.vehicle_id
    # Dispatch recomputes an ETA from the current time on each call, so the two answers may
    # differ by the time between them.
    eta_gap_s = abs(lookup.status.eta.ToNanoseconds() - expected.eta.ToNanoseconds()) / 1e9
    assert eta_gap_s < 30
    assert lookup.status.window == expected.window
    assert reply.next_action.type == intent_pb2.NEXT_ACTION_TYPE_REPLY_WITH_ORDER_STATUS
    assert order_id in reply.next_action.reply_text
