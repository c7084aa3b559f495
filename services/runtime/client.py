"""The client channel factory every caller uses (services calling services, the simulator,
benchmarks, Locust users): per-call default deadlines, a retry policy for UNAVAILABLE in the
service config, keepalive, message size limits, round_robin for ``dns:///`` targets, bearer
token and request-id metadata.

Create one channel per target and reuse it: channels are expensive, stubs are cheap.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from services.runtime.interceptors import REQUEST_ID_KEY
from services.runtime.tls import ClientTLS

MIB = 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's transparent retry settings (gRFC A6), applied to every method of the channel."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    backoff_multiplier: float = 2.0
    retryable_codes: tuple[str, ...] = ("UNAVAILABLE",)


@dataclass(frozen=True)
class ChannelOptions:
    """Everything a channel needs besides its target."""

    tls: ClientTLS | None = None
    auth_token: str | None = None
    #: Deadline for unary calls that set none; streams are left open-ended.
    default_timeout_s: float | None = 5.0
    retry: RetryPolicy | None = field(default_factory=RetryPolicy)
    max_message_bytes: int = 16 * MIB
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    #: Extra metadata on every call, e.g. (("x-shoptwin-synthetic", "simulator"),).
    metadata: tuple[tuple[str, str], ...] = ()


def service_config(target: str, retry: RetryPolicy | None) -> dict[str, Any]:
    """The JSON service config for ``target``: retries, and round_robin for dns:/// targets."""
    config: dict[str, Any] = {}
    if target.startswith("dns:"):
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    if retry is not None:
        config["methodConfig"] = [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": retry.max_attempts,
                    "initialBackoff": f"{retry.initial_backoff_s}s",
                    "maxBackoff": f"{retry.max_backoff_s}s",
                    "backoffMultiplier": retry.backoff_multiplier,
                    "retryableStatusCodes": list(retry.retryable_codes),
                },
            }
        ]
    return config


def channel_arguments(target: str, options: ChannelOptions) -> list[tuple[str, Any]]:
    args: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", options.max_message_bytes),
        ("grpc.max_receive_message_length", options.max_message_bytes),
        ("grpc.keepalive_time_ms", int(options.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(options.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 1 if options.retry else 0),
        ("grpc.service_config", json.dumps(service_config(target, options.retry))),
    ]
    if options.tls is not None and options.tls.server_name:
        args.append(("grpc.ssl_target_name_override", options.tls.server_name))
    return args


def _call_metadata(
    options: ChannelOptions, existing: Sequence[tuple[str, Any]] | None
) -> list[tuple[str, Any]]:
    metadata = list(existing or ())
    keys = {key for key, _ in metadata}
    if REQUEST_ID_KEY not in keys:
        metadata.append((REQUEST_ID_KEY, uuid.uuid4().hex))
    if options.auth_token and "authorization" not in keys:
        metadata.append(("authorization", f"Bearer {options.auth_token}"))
    metadata.extend(options.metadata)
    return metadata


class _AioMetadataInterceptor(
    aio.UnaryUnaryClientInterceptor,
    aio.UnaryStreamClientInterceptor,
    aio.StreamUnaryClientInterceptor,
    aio.StreamStreamClientInterceptor,
):
    def __init__(self, options: ChannelOptions) -> None:
        self._options = options

    def _details(self, details: aio.ClientCallDetails, unary: bool) -> aio.ClientCallDetails:
        timeout = details.timeout
        if timeout is None and unary:
            timeout = self._options.default_timeout_s
        return aio.ClientCallDetails(
            details.method,
            timeout,
            _call_metadata(self._options, details.metadata),  # type: ignore[arg-type]
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details, True), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details, False), request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details, False), requests)

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details, False), requests)


class _SyncCallDetails(grpc.ClientCallDetails):
    def __init__(
        self,
        method: str,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: Any,
        compression: Any,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


class _SyncMetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, options: ChannelOptions) -> None:
        self._options = options

    def _details(self, details: Any, unary: bool) -> _SyncCallDetails:
        timeout = details.timeout
        if timeout is None and unary:
            timeout = self._options.default_timeout_s
        return _SyncCallDetails(
            details.method,
            timeout,
            _call_metadata(self._options, details.metadata),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details, True), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details, False), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details, False), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details, False), requests)


def create_aio_channel(target: str, options: ChannelOptions | None = None) -> aio.Channel:
    """A ``grpc.aio`` channel to ``target`` (``host:port`` or ``dns:///name:port``)."""
    options = options or ChannelOptions()
    args = channel_arguments(target, options)
    interceptors: list[Any] = [_AioMetadataInterceptor(options)]
    if options.tls is not None:
        return aio.secure_channel(
            target, options.tls.credentials(), options=args, interceptors=interceptors
        )
    return aio.insecure_channel(target, options=args, interceptors=interceptors)


def create_sync_channel(target: str, options: ChannelOptions | None = None) -> grpc.Channel:
    """A blocking channel (for Locust users under gevent and simple scripts)."""
    options = options or ChannelOptions()
    args = channel_arguments(target, options)
    if options.tls is not None:
        channel = grpc.secure_channel(target, options.tls.credentials(), options=args)
    else:
        channel = grpc.insecure_channel(target, options=args)
    return grpc.intercept_channel(channel, _SyncMetadataInterceptor(options))
