"""Small in-process implementations of the four service contracts, for testing the live driver
on this branch (where the real services are built elsewhere). Test code only: each follows the
contract's semantics closely enough for the driver's bookkeeping to be checked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from shoptwin.v1 import (
    dispatch_pb2,
    dispatch_pb2_grpc,
    intent_pb2,
    intent_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
    telemetry_pb2,
    telemetry_pb2_grpc,
)


class FakeRecommendation(recommendation_pb2_grpc.RecommendationServiceServicer):
    def __init__(self) -> None:
        self.items = [f"P{i:05d}" for i in range(300)]
        self.categories: dict[str, str] = {}
        self.events: set[str] = set()

    async def Recommend(self, request: Any, context: Any) -> Any:
        k = min(request.k or 10, len(self.items))
        offset = sum(map(ord, request.user_id)) % 50
        chosen = (self.items[offset:] + self.items[:offset])[:k]
        return recommendation_pb2.RecommendResponse(
            items=[
                recommendation_pb2.ScoredItem(
                    item_id=i, score=1.0, category=self.categories.get(i, "")
                )
                for i in chosen
            ],
            model_version="fake",
        )

    async def SimilarItems(self, request: Any, context: Any) -> Any:
        return recommendation_pb2.SimilarItemsResponse(model_version="fake")

    async def RecordFeedback(self, request: Any, context: Any) -> Any:
        new = [e.event_id for e in request.events if e.event_id not in self.events]
        self.events.update(new)
        return recommendation_pb2.RecordFeedbackResponse(
            stored=len(new), duplicates=len(request.events) - len(new)
        )

    async def UpdateCatalog(self, request: Any, context: Any) -> Any:
        for item in request.items:
            self.categories[item.item_id] = item.category
        return recommendation_pb2.UpdateCatalogResponse(updated=len(request.items))


class FakeIntent(intent_pb2_grpc.IntentServiceServicer):
    async def Classify(self, request: Any, context: Any) -> Any:
        label = "track_order" if "order" in request.text.lower() else "contact_human_agent"
        return intent_pb2.ClassifyResponse(
            intent=intent_pb2.IntentScore(intent=label, probability=0.9), model_version="fake"
        )


class FakeDispatch(dispatch_pb2_grpc.DispatchServiceServicer):
    def __init__(self) -> None:
        self.vans: list[str] = []
        self.routes: dict[str, list[str]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.watchers: dict[str, list[asyncio.Queue[None]]] = {}
        self.version = 0

    def _push(self, van: str) -> None:
        self.version += 1
        for queue in self.watchers.get(van, []):
            queue.put_nowait(None)

    async def ConfigureFleet(self, request: Any, context: Any) -> Any:
        self.vans = [v.vehicle_id for v in request.vehicles]
        for van in self.vans:
            self.routes.setdefault(van, [])
        return dispatch_pb2.ConfigureFleetResponse(plan_version=self.version)

    def _status(self, order_id: str) -> Any:
        order = self.orders[order_id]
        return dispatch_pb2.OrderStatus(
            order_id=order_id,
            state=order["state"],
            vehicle_id=order["van"],
            reason=order.get("reason", ""),
            plan_version=self.version,
        )

    async def SubmitOrder(self, request: Any, context: Any) -> Any:
        import grpc

        order_id = request.order.order_id
        if order_id in self.orders:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "order_id: already known")
        van = min(self.vans, key=lambda v: len(self.routes[v]))
        self.routes[van].append(order_id)
        self.orders[order_id] = {"state": dispatch_pb2.ORDER_STATE_ASSIGNED, "van": van}
        self._push(van)
        return dispatch_pb2.SubmitOrderResponse(status=self._status(order_id))

    async def ReportStop(self, request: Any, context: Any) -> Any:
        order = self.orders[request.order_id]
        delivered = request.outcome == dispatch_pb2.STOP_OUTCOME_DELIVERED
        order["state"] = (
            dispatch_pb2.ORDER_STATE_DELIVERED if delivered else dispatch_pb2.ORDER_STATE_FAILED
        )
        order["reason"] = request.reason
        route = self.routes[request.vehicle_id]
        if request.order_id in route:
            route.remove(request.order_id)
            self._push(request.vehicle_id)
        return self._status(request.order_id)

    async def GetOrderStatus(self, request: Any, context: Any) -> Any:
        return self._status(request.order_id)

    async def WatchVehicleRoute(self, request: Any, context: Any) -> AsyncIterator[Any]:
        queue: asyncio.Queue[None] = asyncio.Queue()
        self.watchers.setdefault(request.vehicle_id, []).append(queue)
        while True:
            yield dispatch_pb2.VehicleRoute(
                vehicle_id=request.vehicle_id,
                plan_version=self.version,
                stops=[dispatch_pb2.Stop(order_id=o) for o in self.routes[request.vehicle_id]],
            )
            await queue.get()


class FakeTelemetry(telemetry_pb2_grpc.TelemetryServiceServicer):
    def __init__(self) -> None:
        self.stored: dict[str, set[int]] = {}

    async def Ingest(self, request: Any, context: Any) -> Any:
        stored = duplicates = 0
        for reading in request.readings:
            seen = self.stored.setdefault(reading.device_id, set())
            if reading.sequence in seen:
                duplicates += 1
            else:
                seen.add(reading.sequence)
                stored += 1
        acks = []
        for device in {r.device_id for r in request.readings}:
            seen = self.stored[device]
            contiguous = 0
            while contiguous + 1 in seen:
                contiguous += 1
            acks.append(telemetry_pb2.DeviceAck(device_id=device, acked_sequence=contiguous))
        return telemetry_pb2.UploadAck(
            batch_id=request.batch_id, device_acks=acks, stored=stored, duplicates=duplicates
        )


def add_all(server: Any) -> tuple[FakeRecommendation, FakeDispatch, FakeTelemetry]:
    recommendation, dispatch, telemetry = FakeRecommendation(), FakeDispatch(), FakeTelemetry()
    recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server(recommendation, server)
    intent_pb2_grpc.add_IntentServiceServicer_to_server(FakeIntent(), server)
    dispatch_pb2_grpc.add_DispatchServiceServicer_to_server(dispatch, server)
    telemetry_pb2_grpc.add_TelemetryServiceServicer_to_server(telemetry, server)
    return recommendation, dispatch, telemetry
