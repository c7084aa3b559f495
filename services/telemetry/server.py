"""The TelemetryService servicer: protobuf in, a call on :class:`Telemetry`, protobuf out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from typing import Any

from google.protobuf import timestamp_pb2
from grpc import aio

from services.runtime.errors import ValidationError
from services.runtime.validation import require_count, require_id, require_text
from services.telemetry.alerts import (
    DEVICE_SILENT,
    FIRING,
    GEOFENCE_EXIT,
    STATIONARY_TOO_LONG,
    TEMPERATURE_OUT_OF_RANGE,
    AlertEvent,
)
from services.telemetry.codec import bucket_to_proto, decode_batch, row_to_reading
from services.telemetry.model import MAX_BATCH, MAX_FUTURE_MS, BatchResult, Rejection
from services.telemetry.service import (
    DEFAULT_RANGE_LIMIT,
    FOREVER_MS,
    MAX_LATEST_IDS,
    MAX_RANGE_LIMIT,
    Telemetry,
)
from shoptwin.v1 import telemetry_pb2, telemetry_pb2_grpc

Context = aio.ServicerContext[Any, Any]

ALERT_KINDS = {
    TEMPERATURE_OUT_OF_RANGE: telemetry_pb2.ALERT_KIND_TEMPERATURE_OUT_OF_RANGE,
    STATIONARY_TOO_LONG: telemetry_pb2.ALERT_KIND_STATIONARY_TOO_LONG,
    DEVICE_SILENT: telemetry_pb2.ALERT_KIND_DEVICE_SILENT,
    GEOFENCE_EXIT: telemetry_pb2.ALERT_KIND_GEOFENCE_EXIT,
}
#: Acks waiting to be sent per Upload stream before it stops reading.
MAX_ACKS_IN_FLIGHT = 1024


def to_ack(batch_id: int, result: BatchResult) -> telemetry_pb2.UploadAck:
    return telemetry_pb2.UploadAck(
        batch_id=batch_id,
        device_acks=[
            telemetry_pb2.DeviceAck(device_id=d, acked_sequence=s) for d, s in result.device_acks
        ],
        stored=result.stored,
        duplicates=result.duplicates,
        rejected=[
            telemetry_pb2.RejectedReading(index=r.index, field=r.field, reason=r.reason)
            for r in result.rejected
        ],
    )


def _ms(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    seconds, millis = divmod(ms, 1000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=millis * 1_000_000)


def alert_to_proto(event: AlertEvent) -> telemetry_pb2.Alert:
    return telemetry_pb2.Alert(
        alert_id=event.alert_id,
        rule_id=event.rule_id,
        kind=ALERT_KINDS[event.kind],
        state=(
            telemetry_pb2.ALERT_STATE_FIRING
            if event.state == FIRING
            else telemetry_pb2.ALERT_STATE_RESOLVED
        ),
        device_id=event.device_id,
        since=_timestamp(event.since_ms),
        updated_at=_timestamp(event.updated_ms),
        value=event.value,
        message=event.message,
    )


def _check_filter(device_ids: Any, fleet_id: str) -> None:
    require_count("device_ids", device_ids, high=MAX_LATEST_IDS)
    for i, device_id in enumerate(device_ids):
        require_id(f"device_ids[{i}]", device_id)
    require_text("fleet_id", fleet_id, max_length=128, allow_empty=True)


class TelemetryServicer(telemetry_pb2_grpc.TelemetryServiceServicer):
    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry

    async def _accept(self, request: telemetry_pb2.UploadRequest) -> Awaitable[BatchResult]:
        """Decode one Upload batch and queue it; a batch refused as a whole gets its answer
        at once."""
        n = len(request.readings)
        if n == 0 or n > MAX_BATCH:
            done: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
            reason = f"must have 1..{MAX_BATCH} entries, got {n}"
            done.set_result(BatchResult(0, 0, [Rejection(0, "readings", reason)], []))
            return done
        rows, indices, rejections = decode_batch(request.readings, self._t.now_ms(), MAX_FUTURE_MS)
        return await self._t.submit(rows, indices, rejections)

    async def Upload(
        self, request_iterator: AsyncIterable[telemetry_pb2.UploadRequest], context: Context
    ) -> AsyncIterator[telemetry_pb2.UploadAck]:
        # Reading and acknowledging run concurrently so that many batches of one stream can
        # be in flight (and share a commit); acks still go out in request order.
        pending: asyncio.Queue[tuple[int, Awaitable[BatchResult]] | None] = asyncio.Queue(
            MAX_ACKS_IN_FLIGHT
        )

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await pending.put((request.batch_id, await self._accept(request)))
            finally:
                await pending.put(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await pending.get()
                if item is None:
                    break
                batch_id, result = item
                yield to_ack(batch_id, await result)
            await reader
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    async def Ingest(
        self, request: telemetry_pb2.UploadRequest, context: Context
    ) -> telemetry_pb2.UploadAck:
        require_count("readings", request.readings, low=1, high=MAX_BATCH)
        rows, indices, rejections = decode_batch(request.readings, self._t.now_ms(), MAX_FUTURE_MS)
        if rejections:
            raise ValidationError(rejections[0].field, rejections[0].reason)
        self._t.check_window(rows, indices)
        future = await self._t.submit(rows, indices, rejections)
        return to_ack(request.batch_id, await future)

    async def GetLatest(
        self, request: telemetry_pb2.GetLatestRequest, context: Context
    ) -> telemetry_pb2.GetLatestResponse:
        _check_filter(request.device_ids, request.fleet_id)
        rows = self._t.latest(list(request.device_ids), request.fleet_id)
        return telemetry_pb2.GetLatestResponse(readings=[row_to_reading(r) for r in rows])

    async def QueryRange(
        self, request: telemetry_pb2.QueryRangeRequest, context: Context
    ) -> telemetry_pb2.QueryRangeResponse:
        require_id("device_id", request.device_id)
        start_ms = _ms(request.start) if request.HasField("start") else 0
        end_ms = _ms(request.end) if request.HasField("end") else FOREVER_MS
        if end_ms < start_ms:
            raise ValidationError("end", "must not be before start")
        if request.limit > MAX_RANGE_LIMIT:
            raise ValidationError(
                "limit", f"must be at most {MAX_RANGE_LIMIT}, got {request.limit}"
            )
        limit = request.limit or DEFAULT_RANGE_LIMIT
        resolution_ms = 0
        if request.HasField("resolution"):
            res = request.resolution
            if res.seconds < 0 or res.nanos < 0:
                raise ValidationError("resolution", "must not be negative")
            resolution_ms = res.seconds * 1000 + res.nanos // 1_000_000
            if resolution_ms == 0 and (res.seconds or res.nanos):
                raise ValidationError("resolution", "must be at least 1 ms")
        result = await self._t.query_range(
            request.device_id, start_ms, end_ms, resolution_ms, limit
        )
        return telemetry_pb2.QueryRangeResponse(
            readings=[row_to_reading(r) for r in result.rows],
            buckets=[bucket_to_proto(b) for b in result.buckets],
            truncated=result.truncated,
        )

    async def WatchLive(
        self, request: telemetry_pb2.WatchLiveRequest, context: Context
    ) -> AsyncIterator[telemetry_pb2.Reading]:
        _check_filter(request.device_ids, request.fleet_id)
        subscription = self._t.watch_live(list(request.device_ids), request.fleet_id)
        # Headers go out as soon as the subscription is registered, so a subscriber knows from
        # which moment on it sees every stored reading (no snapshot precedes the stream).
        await context.send_initial_metadata(())
        try:
            async for row in subscription:
                yield row_to_reading(row)
        finally:
            self._t.live.unsubscribe(subscription)

    async def WatchAlerts(
        self, request: telemetry_pb2.WatchAlertsRequest, context: Context
    ) -> AsyncIterator[telemetry_pb2.Alert]:
        _check_filter(request.device_ids, request.fleet_id)
        subscription = self._t.watch_alerts(list(request.device_ids), request.fleet_id)
        await context.send_initial_metadata(())
        try:
            async for event in subscription:
                yield alert_to_proto(event)
        finally:
            self._t.alert_hub.unsubscribe(subscription)

    async def ListAlerts(
        self, request: telemetry_pb2.ListAlertsRequest, context: Context
    ) -> telemetry_pb2.ListAlertsResponse:
        return telemetry_pb2.ListAlertsResponse(
            firing=[alert_to_proto(e) for e in self._t.firing_alerts()],
            rules=[
                telemetry_pb2.AlertRule(
                    rule_id=r.rule_id, kind=ALERT_KINDS[r.kind], definition=r.definition
                )
                for r in self._t.rules
            ],
        )
