"""The client channel factory: service config, default deadlines, retries, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from services.runtime.client import (
    ChannelOptions,
    RetryPolicy,
    channel_arguments,
    create_aio_channel,
    create_sync_channel,
    service_config,
)
from services.runtime.testing import running_service
from shoptwin.v1 import echo_pb2, echo_pb2_grpc
from tests.runtime.certs import make_certs
from tests.runtime.probe_app import PROBE


def test_round_robin_only_for_dns_targets() -> None:
    assert service_config("dns:///recommendation.shop.svc:50051", None)["loadBalancingConfig"] == [
        {"round_robin": {}}
    ]
    assert "loadBalancingConfig" not in service_config("127.0.0.1:50051", None)


def test_retry_policy_in_service_config() -> None:
    args = dict(channel_arguments("localhost:1", ChannelOptions(retry=RetryPolicy(max_attempts=3))))
    config = json.loads(args["grpc.service_config"])
    policy = config["methodConfig"][0]["retryPolicy"]
    assert policy["maxAttempts"] == 3
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert args["grpc.max_receive_message_length"] == ChannelOptions().max_message_bytes


async def test_retries_unavailable_transparently() -> None:
    async with running_service(PROBE) as svc:
        retrying = create_aio_channel(svc.target, ChannelOptions())
        stub = echo_pb2_grpc.EchoServiceStub(retrying)
        reply = await stub.Echo(echo_pb2.EchoRequest(payload=b"flaky:a:2"))
        assert reply.payload == b"flaky:a:2"
        await retrying.close(None)
        # Without retries the first failure reaches the caller.
        plain = echo_pb2_grpc.EchoServiceStub(svc.channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await plain.Echo(echo_pb2.EchoRequest(payload=b"flaky:b:1"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_default_deadline_applies_to_unary_calls() -> None:
    async with running_service(PROBE) as svc:
        channel = create_aio_channel(svc.target, ChannelOptions(retry=None, default_timeout_s=0.2))
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Echo(echo_pb2.EchoRequest(payload=b"slow:2"))
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # An explicit timeout wins over the default.
        reply = await stub.Echo(echo_pb2.EchoRequest(payload=b"slow:0.3"), timeout=5)
        assert reply.payload == b"slow:0.3"
        await channel.close(None)


async def test_sync_channel_sends_token_and_request_id() -> None:
    token = "a-token-long-enough-for-auth"
    async with running_service(PROBE, auth_token=token) as svc:
        channel = create_sync_channel(svc.target, ChannelOptions(auth_token=token, retry=None))
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        # A blocking call on the event loop thread is fine here: the server runs in the loop
        # only when we await, so run the sync call in a worker thread.
        import asyncio

        reply, call = await asyncio.to_thread(
            stub.Echo.with_call, echo_pb2.EchoRequest(payload=b"s")
        )
        assert reply.payload == b"s"
        assert len(dict(call.trailing_metadata())["x-request-id"]) == 32
        channel.close()


async def test_upstream_settings_give_tls_channel_options(tmp_path: Path) -> None:
    from services.runtime.config import ServerSettings

    certs = make_certs(tmp_path)
    settings = ServerSettings(
        upstream_tls_ca=certs.ca,
        upstream_tls_cert=certs.client_cert,
        upstream_tls_key=certs.client_key,
        upstream_auth_token="upstream-token-0123456789",
    )
    settings.validate()
    options = settings.upstream_channel_options(default_timeout_s=1.0)
    assert options.tls is not None and options.tls.client_cert == certs.client_cert
    assert options.default_timeout_s == 1.0
    async with running_service(
        PROBE,
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
        tls_client_ca=certs.ca,
        auth_token="upstream-token-0123456789",
        channel_options=options,
    ) as svc:
        reply = await echo_pb2_grpc.EchoServiceStub(svc.channel).Echo(
            echo_pb2.EchoRequest(payload=b"up")
        )
        assert reply.payload == b"up"
    assert ServerSettings().upstream_channel_options().tls is None
