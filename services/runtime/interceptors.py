"""Server interceptors: request id, structured access log, Prometheus metrics, mapping of domain
errors to status codes, and bearer-token auth.

One observability interceptor does the per-call bookkeeping (one wrapper per call instead of a
stack of them, since every microsecond here is paid by every RPC); auth is separate because it
is optional.
"""

from __future__ import annotations

import hmac
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from grpc import aio

from services.runtime.errors import DomainError
from services.runtime.metrics import RpcMetrics

REQUEST_ID_KEY = "x-request-id"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
MAX_REQUEST_ID_LENGTH = 128

Handler = grpc.RpcMethodHandler
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


def _metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for item in details.invocation_metadata or ():
        if item[0] == key:
            value = item[1]
            return value.decode() if isinstance(value, bytes) else value
    return None


def _split_method(full_method: str) -> tuple[str, str]:
    # "/shoptwin.v1.RecommendationService/Recommend" -> (service, method)
    _, _, rest = full_method.partition("/")
    service, _, method = rest.rpartition("/")
    return service, method


def _code_of(context: aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code = context.code()
    if code is None:
        return grpc.StatusCode.OK
    if isinstance(code, grpc.StatusCode):
        return code
    # Some grpc versions report the integer value of the code.
    for member in grpc.StatusCode:
        if member.value[0] == code:
            return member
    return grpc.StatusCode.UNKNOWN


def _rebuild(handler: Handler, **behaviours: Any) -> Handler:
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(behaviours["unary_unary"], **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(behaviours["unary_stream"], **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(behaviours["stream_unary"], **kwargs)
    return grpc.stream_stream_rpc_method_handler(behaviours["stream_stream"], **kwargs)


def _unexpected(exc: BaseException) -> str | None:
    """The repr of an exception that is a bug rather than a status (for the access log)."""
    if isinstance(exc, DomainError | NotImplementedError | aio.AbortError):
        return None
    return repr(exc)


async def _abort_for(exc: BaseException, context: aio.ServicerContext[Any, Any]) -> None:
    """Turn a domain error (or a stub's NotImplementedError) into a status; re-raise others."""
    if isinstance(exc, DomainError):
        await context.abort(grpc.StatusCode[exc.status_name], exc.message)
    if isinstance(exc, NotImplementedError):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "method not implemented yet")
    raise exc


class ObservabilityInterceptor(aio.ServerInterceptor):
    """Request id, access log, metrics and error mapping for every RPC."""

    def __init__(self, service: str, metrics: RpcMetrics | None, *, access_log: bool) -> None:
        self._service = service
        self._metrics = metrics
        self._access_log = access_log
        self._log = structlog.get_logger("shoptwin.access")

    async def intercept_service(  # type: ignore[override]  # grpc returns None for unknown methods
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        full_method = handler_call_details.method
        _, method = _split_method(full_method)
        incoming = _metadata_value(handler_call_details, REQUEST_ID_KEY)
        request_id = (
            incoming if incoming and len(incoming) <= MAX_REQUEST_ID_LENGTH else uuid.uuid4().hex
        )
        is_health = full_method.startswith(HEALTH_PREFIX)

        # The peer is read when the call starts: calling context.peer() after a cancelled
        # stream's call is torn down (client gone mid-write, then server stop) segfaults in
        # grpc 1.85.
        def begin(context: aio.ServicerContext[Any, Any]) -> tuple[float, str]:
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            if self._metrics is not None:
                self._metrics.in_flight.labels(self._service, method).inc()
            structlog.contextvars.bind_contextvars(request_id=request_id)
            return time.perf_counter(), context.peer()

        def finish(
            context: aio.ServicerContext[Any, Any], begun: tuple[float, str], error: str | None
        ) -> None:
            started, peer = begun
            elapsed = time.perf_counter() - started
            code = _code_of(context)
            if error is not None and code is grpc.StatusCode.OK:
                code = grpc.StatusCode.UNKNOWN
            if self._metrics is not None:
                self._metrics.in_flight.labels(self._service, method).dec()
                self._metrics.requests.labels(self._service, method, code.name).inc()
                self._metrics.latency.labels(self._service, method, code.name).observe(elapsed)
            if self._access_log and not is_health:
                log = self._log.error if code is grpc.StatusCode.UNKNOWN else self._log.info
                log(
                    "rpc",
                    method=full_method,
                    code=code.name,
                    duration_ms=round(elapsed * 1000, 3),
                    peer=peer,
                    request_id=request_id,
                    **({"error": error} if error else {}),
                )
            structlog.contextvars.unbind_contextvars("request_id")

        async def unary_result(
            behaviour: Callable[..., Any], request: Any, context: aio.ServicerContext[Any, Any]
        ) -> Any:
            begun = begin(context)
            error = None
            try:
                result = behaviour(request, context)
                if inspect.isawaitable(result):
                    result = await result
                return result
            except Exception as exc:
                error = _unexpected(exc)
                await _abort_for(exc, context)
            finally:
                finish(context, begun, error)

        if handler.unary_unary or handler.stream_unary:
            inner: Callable[..., Any] = handler.unary_unary or handler.stream_unary  # type: ignore[assignment]

            async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                return await unary_result(inner, request, context)

            return _rebuild(handler, unary_unary=unary, stream_unary=unary)

        inner_stream: Callable[..., Any] = handler.unary_stream or handler.stream_stream  # type: ignore[assignment]

        # grpc.aio picks how to drive a streaming handler by its function type, so this must be
        # an async generator function itself, not a function returning one.
        async def streaming(
            request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            begun = begin(context)
            error = None
            try:
                result = inner_stream(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                elif inspect.isawaitable(result):
                    await result
                else:
                    for item in result:
                        yield item
            except Exception as exc:
                error = _unexpected(exc)
                await _abort_for(exc, context)
            finally:
                finish(context, begun, error)

        return _rebuild(handler, unary_stream=streaming, stream_stream=streaming)


class BearerAuthInterceptor(aio.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` (health checks are exempt, so
    load balancers and kubelet probes need no secret)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(  # type: ignore[override]  # grpc returns None for unknown methods
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        if handler_call_details.method.startswith(HEALTH_PREFIX):
            return await continuation(handler_call_details)
        presented = _metadata_value(handler_call_details, "authorization") or ""
        if hmac.compare_digest(presented.encode(), self._expected):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None

        async def deny(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or invalid bearer token in 'authorization'",
            )

        return _rebuild(
            handler, unary_unary=deny, unary_stream=deny, stream_unary=deny, stream_stream=deny
        )
