"""The DispatchService servicer: protobuf in, domain call, protobuf out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor

from grpc import aio

from services.dispatch import convert
from services.dispatch.engine import DispatchEngine
from services.dispatch.problem import RoutingProblem
from services.dispatch.solver import SolveOptions, solve_problem
from services.runtime.errors import ValidationError
from services.runtime.validation import require_id, require_range, require_text
from shoptwin.v1 import dispatch_pb2, dispatch_pb2_grpc

MAX_REASON = 512
MAX_SEED = 2**32


class DispatchServicer(dispatch_pb2_grpc.DispatchServiceServicer):
    def __init__(self, engine: DispatchEngine, plan_executor: Executor) -> None:
        self._engine = engine
        self._plan_executor = plan_executor

    async def Plan(
        self, request: dispatch_pb2.PlanRequest, context: aio.ServicerContext
    ) -> dispatch_pb2.PlanResponse:
        depot, vehicles = convert.fleet(
            request.depot, request.vehicles, request.orders, time.time()
        )
        orders = convert.plan_orders(request.orders, convert.is_geo(depot.location))
        options = SolveOptions(
            time_limit_s=convert.time_limit(request), seed=request.seed % MAX_SEED
        )
        problem = RoutingProblem(depot, tuple(vehicles), tuple(orders))
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._plan_executor, solve_problem, problem, options)
        return convert.plan_response(result)

    async def ConfigureFleet(
        self, request: dispatch_pb2.ConfigureFleetRequest, context: aio.ServicerContext
    ) -> dispatch_pb2.ConfigureFleetResponse:
        depot, vehicles = convert.fleet(request.depot, request.vehicles, [], time.time())
        version = await self._engine.configure_fleet(depot, vehicles)
        return dispatch_pb2.ConfigureFleetResponse(plan_version=version)

    async def SubmitOrder(
        self, request: dispatch_pb2.SubmitOrderRequest, context: aio.ServicerContext
    ) -> dispatch_pb2.SubmitOrderResponse:
        if not request.HasField("order"):
            raise ValidationError("order", "must be set")
        order = convert.order("order", request.order, self._engine.dispatcher.fleet_problem_kind())
        view = await self._engine.submit(order)
        return dispatch_pb2.SubmitOrderResponse(status=convert.order_status(view))

    async def CancelOrder(
        self, request: dispatch_pb2.CancelOrderRequest, context: aio.ServicerContext
    ) -> dispatch_pb2.OrderStatus:
        require_id("order_id", request.order_id)
        return convert.order_status(await self._engine.cancel(request.order_id))

    async def GetOrderStatus(
        self, request: dispatch_pb2.GetOrderStatusRequest, context: aio.ServicerContext
    ) -> dispatch_pb2.OrderStatus:
        require_id("order_id", request.order_id)
        return convert.order_status(self._engine.status(request.order_id))

    async def ReportStop(
        self, request: dispatch_pb2.ReportStopRequest, context: aio.ServicerContext
    ) -> dispatch_pb2.OrderStatus:
        require_id("vehicle_id", request.vehicle_id)
        require_id("order_id", request.order_id)
        if request.outcome == dispatch_pb2.STOP_OUTCOME_UNSPECIFIED:
            raise ValidationError("outcome", "must be DELIVERED or FAILED")
        require_text("reason", request.reason, max_length=MAX_REASON, allow_empty=True)
        when = convert.seconds(request.time) if request.HasField("time") else None
        view = await self._engine.report_stop(
            request.vehicle_id,
            request.order_id,
            request.outcome == dispatch_pb2.STOP_OUTCOME_DELIVERED,
            request.reason,
            when,
        )
        return convert.order_status(view)

    async def ReportVehiclePosition(
        self, request: dispatch_pb2.ReportVehiclePositionRequest, context: aio.ServicerContext
    ) -> dispatch_pb2.ReportVehiclePositionResponse:
        require_id("vehicle_id", request.vehicle_id)
        if not request.HasField("position"):
            raise ValidationError("position", "must be set (geo or plane)")
        position = convert.point("position", request.position)
        require_range("speed", request.speed, 0.0, convert.MAX_SPEED)
        when = convert.seconds(request.time) if request.HasField("time") else None
        replanned = await self._engine.report_position(request.vehicle_id, position, when)
        return dispatch_pb2.ReportVehiclePositionResponse(replanned=replanned)

    async def WatchVehicleRoute(
        self, request: dispatch_pb2.WatchVehicleRouteRequest, context: aio.ServicerContext
    ) -> AsyncIterator[dispatch_pb2.VehicleRoute]:
        require_id("vehicle_id", request.vehicle_id)
        async for view in self._engine.watch(request.vehicle_id):
            yield convert.vehicle_route(view)

    async def GetPlan(
        self, request: dispatch_pb2.GetPlanRequest, context: aio.ServicerContext
    ) -> dispatch_pb2.PlanSnapshot:
        return convert.plan_snapshot(self._engine.plan())
