"""The gRPC surface on a real in-process server: Upload and Ingest semantics, bad input by
field name, queries, the live stream with several subscribers, alerts."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from services.runtime.testing import running_service
from services.telemetry.app import TelemetryApp
from services.telemetry.live import Hub
from services.telemetry.service import Telemetry
from shoptwin.v1 import telemetry_pb2, telemetry_pb2_grpc
from tests.telemetry.helpers import NOW_S, batch, options, reading


def telemetry_of(svc: object) -> Telemetry:
    app = svc.server.app  # type: ignore[attr-defined]
    assert isinstance(app, TelemetryApp) and app.telemetry is not None
    return app.telemetry


async def requests(
    *items: telemetry_pb2.UploadRequest,
) -> AsyncIterator[telemetry_pb2.UploadRequest]:
    for item in items:
        yield item


async def test_upload_stream_keeps_going_after_bad_input(tmp_path: Path) -> None:
    nan_batch = batch(2, [reading("a", 4), reading("a", 5, lat=math.nan)])
    future_batch = batch(3, [reading("a", 6, seconds=NOW_S + 3600)])
    empty_id = batch(4, [reading("", 1)])
    too_big = batch(5, [reading("b", i + 1) for i in range(5001)])
    empty = batch(6, [])
    far_behind = batch(7, [reading("c", i + 1) for i in range(300)])
    behind = batch(8, [reading("c", 1)])
    last = batch(9, [reading("a", 6), reading("a", 5), reading("a", 4)])
    async with running_service("telemetry", options(tmp_path, reorder_window=100)) as svc:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(svc.channel)
        stream = stub.Upload(
            requests(
                batch(1, [reading("a", s) for s in (1, 2, 3)]),
                nan_batch,
                future_batch,
                empty_id,
                too_big,
                empty,
                far_behind,
                behind,
                last,
            )
        )
        acks = [ack async for ack in stream]
    assert [a.batch_id for a in acks] == list(range(1, 10))
    by_id = {a.batch_id: a for a in acks}
    assert by_id[1].stored == 3
    # An ack reports the state after its commit, and group commit may fold any later batches
    # of the stream into batch 1's: 3 alone, 4 with batch 2, 6 with batch 9 (a slow first
    # fsync on a fresh CI machine queued all nine behind it).
    assert by_id[1].device_acks[0].acked_sequence in (3, 4, 6)
    assert [(r.index, r.field) for r in by_id[2].rejected] == [(1, "readings[1].position.latitude")]
    assert by_id[2].stored == 1
    assert [r.field for r in by_id[3].rejected] == ["readings[0].time"]
    assert [r.field for r in by_id[4].rejected] == ["readings[0].device_id"]
    assert [r.field for r in by_id[5].rejected] == ["readings"]
    assert "5000" in by_id[5].rejected[0].reason and by_id[5].stored == 0
    assert [r.field for r in by_id[6].rejected] == ["readings"]
    assert by_id[7].stored == 300
    assert [r.field for r in by_id[8].rejected] == ["readings[0].sequence"]
    assert (by_id[9].stored, by_id[9].duplicates) == (2, 1)  # 5 was refused in batch 2
    assert by_id[9].device_acks[0].acked_sequence == 6


@pytest.mark.parametrize(
    ("readings", "field"),
    [
        ([reading("a", 1, lat=math.nan)], "readings[0].position.latitude"),
        ([reading("a", 1), reading("a", 2, lon=-200)], "readings[1].position.longitude"),
        # An hour ahead: NOW_S is fixed at import, so a small margin would shrink over a long run.
        ([reading("a", 1, seconds=NOW_S + 3600)], "readings[0].time"),
        ([reading("", 1)], "readings[0].device_id"),
        ([reading("a", i + 1) for i in range(5001)], "readings"),
        ([], "readings"),
    ],
)
async def test_ingest_refuses_bad_batches_naming_the_field(
    tmp_path: Path, readings: list[telemetry_pb2.Reading], field: str
) -> None:
    async with running_service("telemetry", options(tmp_path)) as svc:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(svc.channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Ingest(batch(1, readings))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith(f"{field}: ")
        # Nothing of a refused batch is stored; the service keeps working.
        ack = await stub.Ingest(batch(2, [reading("a", 1)]))
        assert ack.stored == 1


async def test_ingest_refuses_a_sequence_far_behind_the_window(tmp_path: Path) -> None:
    async with running_service("telemetry", options(tmp_path, reorder_window=50)) as svc:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(svc.channel)
        await stub.Ingest(batch(1, [reading("a", i + 1) for i in range(100)]))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Ingest(batch(2, [reading("a", 101), reading("a", 10)]))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith("readings[1].sequence: ")
        ack = await stub.Ingest(batch(3, [reading("a", 60), reading("a", 101)]))
        assert (ack.stored, ack.duplicates) == (1, 1)


async def test_latest_and_range_queries(tmp_path: Path) -> None:
    async with running_service("telemetry", options(tmp_path)) as svc:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(svc.channel)
        await stub.Ingest(
            batch(
                1,
                [reading("a", s, fleet_id="f1", temperature=float(s)) for s in range(1, 121)]
                + [reading("b", 1, fleet_id="f1"), reading("c", 1, fleet_id="f2")],
            )
        )
        latest = await stub.GetLatest(telemetry_pb2.GetLatestRequest(fleet_id="f1"))
        assert sorted((r.device_id, r.sequence) for r in latest.readings) == [("a", 120), ("b", 1)]
        some = await stub.GetLatest(telemetry_pb2.GetLatestRequest(device_ids=["c", "nope"]))
        assert [r.device_id for r in some.readings] == ["c"]
        start = reading("a", 1).time
        end = reading("a", 61).time
        raw = await stub.QueryRange(
            telemetry_pb2.QueryRangeRequest(device_id="a", start=start, end=end)
        )
        assert [r.sequence for r in raw.readings] == list(range(1, 61))
        assert raw.readings[4].temperature_c == 5.0
        buckets = await stub.QueryRange(
            telemetry_pb2.QueryRangeRequest(device_id="a", resolution=Duration(seconds=60))
        )
        assert sum(b.count for b in buckets.buckets) == 120
        assert all(b.HasField("temperature_c") for b in buckets.buckets)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.QueryRange(telemetry_pb2.QueryRangeRequest(device_id="nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        for request, field in [
            (telemetry_pb2.QueryRangeRequest(device_id=""), "device_id"),
            (telemetry_pb2.QueryRangeRequest(device_id="a", start=end, end=start), "end"),
            (telemetry_pb2.QueryRangeRequest(device_id="a", limit=100_001), "limit"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.QueryRange(request)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (info.value.details() or "").startswith(f"{field}: ")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetLatest(telemetry_pb2.GetLatestRequest())
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _collect(stream: grpc.aio.UnaryStreamCall, n: int) -> list[telemetry_pb2.Reading]:
    out = []
    async for item in stream:
        out.append(item)
        if len(out) == n:
            break
    return out


async def _wait_for(predicate, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_live_stream_fans_out_to_several_filtered_subscribers(tmp_path: Path) -> None:
    async with running_service("telemetry", options(tmp_path)) as svc:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(svc.channel)
        t = telemetry_of(svc)
        by_device = stub.WatchLive(telemetry_pb2.WatchLiveRequest(device_ids=["van-1"]))
        by_fleet = stub.WatchLive(telemetry_pb2.WatchLiveRequest(fleet_id="cold"))
        everything = stub.WatchLive(telemetry_pb2.WatchLiveRequest())
        await _wait_for(lambda: len(t.live.subscribers) == 3)
        sent = [
            reading("van-1", 1, fleet_id="parcels"),
            reading("box-1", 1, fleet_id="cold"),
            reading("van-2", 1, fleet_id="parcels"),
            reading("van-1", 2, fleet_id="parcels"),
            reading("box-1", 2),  # no fleet in the reading: the device's known fleet counts
        ]
        await stub.Ingest(batch(1, sent))
        device_items, fleet_items, all_items = await asyncio.wait_for(
            asyncio.gather(_collect(by_device, 2), _collect(by_fleet, 2), _collect(everything, 5)),
            10,
        )
        assert [(r.device_id, r.sequence) for r in device_items] == [("van-1", 1), ("van-1", 2)]
        assert [(r.device_id, r.sequence) for r in fleet_items] == [("box-1", 1), ("box-1", 2)]
        assert sorted((r.device_id, r.sequence) for r in all_items) == sorted(
            (r.device_id, r.sequence) for r in sent
        )
        # Resends are not streamed again: only newly stored readings are live news.
        await stub.Ingest(batch(2, [reading("van-1", 2, fleet_id="parcels")]))
        await stub.Ingest(batch(3, [reading("van-1", 3, fleet_id="parcels")]))
        nxt = await asyncio.wait_for(_collect(by_device, 1), 10)
        assert nxt[0].sequence == 3
        for call in (by_device, by_fleet, everything):
            call.cancel()
        await _wait_for(lambda: not t.live.subscribers)


async def test_a_subscriber_that_never_reads_does_not_block_ingestion(tmp_path: Path) -> None:
    async with running_service("telemetry", options(tmp_path, live_queue_size=100)) as svc:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(svc.channel)
        t = telemetry_of(svc)
        stalled = stub.WatchLive(telemetry_pb2.WatchLiveRequest())
        await _wait_for(lambda: len(t.live.subscribers) == 1)
        for b in range(10):
            readings = [reading(f"d{b}", s + 1) for s in range(2000)]
            ack = await stub.Ingest(batch(b, readings), timeout=30)
            assert ack.stored == 2000
        subscription = t.live.subscribers[0]
        assert len(subscription.queue) <= 100
        assert subscription.dropped > 0
        stalled.cancel()


def test_hub_drops_the_oldest_for_a_full_subscriber() -> None:
    hub: Hub[tuple[str, int]] = Hub(maxlen=5)
    slow = hub.subscribe([], "")
    only_b = hub.subscribe(["b"], "")
    hub.publish([("a", i) for i in range(12)] + [("b", 1)], lambda item: (item[0], ""))
    assert list(slow.queue) == [("a", 8), ("a", 9), ("a", 10), ("a", 11), ("b", 1)]
    assert slow.dropped == 8
    assert list(only_b.queue) == [("b", 1)] and only_b.dropped == 0


async def test_alerts_stream_and_list(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - {id: cold, kind: temperature_out_of_range, min_c: 2, max_c: 8, for_s: 0}\n"
    )
    opts = options(tmp_path, alerts_enabled=True, rules_file=rules)
    async with running_service("telemetry", opts) as svc:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(svc.channel)
        t = telemetry_of(svc)
        watch = stub.WatchAlerts(telemetry_pb2.WatchAlertsRequest(device_ids=["box"]))
        await _wait_for(lambda: len(t.alert_hub.subscribers) == 1)
        await stub.Ingest(batch(1, [reading("box", 1, temperature=12.5)]))
        # Rules run on their own thread just after the commit: wait for them.
        await _wait_for(lambda: bool(t.firing_alerts()))
        listed = await stub.ListAlerts(telemetry_pb2.ListAlertsRequest())
        assert [(a.rule_id, a.device_id) for a in listed.firing] == [("cold", "box")]
        assert [r.rule_id for r in listed.rules] == ["cold"]
        await stub.Ingest(batch(2, [reading("box", 2, temperature=5.0)]))
        alerts = []
        async for alert in watch:
            alerts.append(alert)
            if len(alerts) == 2:
                break
        assert [a.state for a in alerts] == [
            telemetry_pb2.ALERT_STATE_FIRING,
            telemetry_pb2.ALERT_STATE_RESOLVED,
        ]
        assert alerts[0].kind == telemetry_pb2.ALERT_KIND_TEMPERATURE_OUT_OF_RANGE
        assert alerts[0].value == 12.5
        watch.cancel()
        await _wait_for(lambda: not t.firing_alerts())
        assert not (await stub.ListAlerts(telemetry_pb2.ListAlertsRequest())).firing
