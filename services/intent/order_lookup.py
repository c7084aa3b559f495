"""Order status from the dispatch service: deadline and retries through the runtime's client
factory; an unreachable, slow or not-yet-implemented dispatch becomes an outcome, never an
error of the Classify call."""

from __future__ import annotations

import grpc
import structlog
from grpc import aio

from services.intent.actions import LookupOutcome
from services.intent.pipeline import LookupReport
from services.runtime.client import ChannelOptions, RetryPolicy, create_aio_channel
from shoptwin.v1 import dispatch_pb2, dispatch_pb2_grpc

log = structlog.get_logger("shoptwin.intent.order_lookup")


def describe_status(status: dispatch_pb2.OrderStatus) -> str:
    """A reply sentence for a shopper from dispatch's order status."""
    state = dispatch_pb2.OrderState.Name(status.state).removeprefix("ORDER_STATE_")
    words = {
        "ASSIGNED": "is scheduled for delivery",
        "EN_ROUTE": "is on its way",
        "DELIVERED": "has been delivered",
        "FAILED": "could not be delivered",
        "CANCELLED": "was cancelled",
        "UNASSIGNABLE": "cannot be scheduled yet",
    }.get(state, "is being processed")
    text = f"Your order {status.order_id} {words}"
    if status.HasField("eta") and state in ("ASSIGNED", "EN_ROUTE"):
        eta = status.eta.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")
        text += f"; estimated arrival {eta}"
        if status.late:
            text += " (running late)"
    if status.reason:
        text += f" ({status.reason})"
    return text + "."


class DispatchOrderLookup:
    """``GetOrderStatus`` over one reused channel to ``target``."""

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 1.0,
        attempts: int = 3,
        channel_options: ChannelOptions | None = None,
    ) -> None:
        options = channel_options or ChannelOptions(
            default_timeout_s=timeout_s,
            retry=RetryPolicy(max_attempts=attempts, initial_backoff_s=0.05, max_backoff_s=0.2),
        )
        self.target = target
        self._timeout_s = timeout_s
        self._channel: aio.Channel = create_aio_channel(target, options)
        self._stub = dispatch_pb2_grpc.DispatchServiceStub(self._channel)

    async def lookup(self, order_id: str) -> LookupReport:
        """The status of ``order_id``; dispatch errors become outcomes with a detail."""
        try:
            status = await self._stub.GetOrderStatus(
                dispatch_pb2.GetOrderStatusRequest(order_id=order_id), timeout=self._timeout_s
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, aio.AioRpcError) else None
            details = exc.details() if isinstance(exc, aio.AioRpcError) else str(exc)
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return LookupReport(LookupOutcome.UNKNOWN_ORDER, order_id, detail=details or "")
            log.warning(
                "dispatch lookup failed",
                target=self.target,
                code=code.name if code else "UNKNOWN",
                details=details,
            )
            name = code.name if code else "UNKNOWN"
            return LookupReport(
                LookupOutcome.DISPATCH_UNAVAILABLE,
                order_id,
                detail=f"dispatch at {self.target} answered {name}: {details}",
            )
        return LookupReport(
            LookupOutcome.FOUND, order_id, status=status, summary=describe_status(status)
        )

    async def close(self) -> None:
        await self._channel.close(None)
