"""The shared runtime on a real in-process server: health, reflection, interceptors, error
mapping, auth, TLS/mTLS, message limits and graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from services.runtime.client import ChannelOptions, create_aio_channel
from services.runtime.config import ServerSettings
from services.runtime.metrics import RpcMetrics
from services.runtime.server import ServiceServer
from services.runtime.testing import running_service
from services.runtime.tls import ClientTLS
from shoptwin.v1 import echo_pb2, echo_pb2_grpc
from tests.runtime.certs import make_certs
from tests.runtime.probe_app import PROBE

TOKEN = "s3cret-token-of-enough-length"


async def echo(channel: grpc.aio.Channel, payload: bytes, **kwargs: object) -> bytes:
    reply = await echo_pb2_grpc.EchoServiceStub(channel).Echo(
        echo_pb2.EchoRequest(payload=payload), **kwargs
    )
    return bytes(reply.payload)


async def test_validation_error_maps_to_invalid_argument_naming_the_field() -> None:
    async with running_service(PROBE) as svc:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo(svc.channel, b"invalid")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("payload:")


async def test_domain_errors_and_unexpected_errors() -> None:
    async with running_service(PROBE) as svc:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo(svc.channel, b"missing")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo(svc.channel, b"boom")
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        # The server survives both and keeps answering.
        assert await echo(svc.channel, b"ok") == b"ok"


async def test_request_id_is_echoed_or_generated() -> None:
    async with running_service(PROBE) as svc:
        stub = echo_pb2_grpc.EchoServiceStub(svc.channel)
        call = stub.Echo(echo_pb2.EchoRequest(payload=b"x"), metadata=(("x-request-id", "abc123"),))
        await call
        trailing = dict(await call.trailing_metadata())
        assert trailing["x-request-id"] == "abc123"
        bare = grpc.aio.insecure_channel(svc.target)
        call = echo_pb2_grpc.EchoServiceStub(bare).Echo(echo_pb2.EchoRequest(payload=b"x"))
        await call
        generated = dict(await call.trailing_metadata())["x-request-id"]
        assert len(generated) == 32 and generated != "abc123"
        await bare.close(None)


async def test_access_log_and_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    from services.runtime.logging import configure_logging

    configure_logging("info", "json")
    registry = CollectorRegistry()
    server = ServiceServer(
        PROBE, ServerSettings(grace_s=0.5), None, metrics=RpcMetrics.create(registry)
    )
    port = await server.start()
    channel = create_aio_channel(f"127.0.0.1:{port}", ChannelOptions(retry=None))
    try:
        await echo(channel, b"ok", metadata=(("x-request-id", "req-1"),))
        with pytest.raises(grpc.aio.AioRpcError):
            await echo(channel, b"invalid")
    finally:
        await channel.close(None)
        await server.stop(0.5)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if '"rpc"' in line]
    ok = next(line for line in lines if line.get("request_id") == "req-1")
    assert ok["method"] == "/shoptwin.v1.EchoService/Echo"
    assert ok["code"] == "OK" and ok["duration_ms"] >= 0 and ok["peer"].startswith("ipv4:")
    assert any(line["code"] == "INVALID_ARGUMENT" for line in lines)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"service": "probe", "method": "Echo", **labels})

    assert sample("shoptwin_rpc_requests_total", code="OK") == 1
    assert sample("shoptwin_rpc_requests_total", code="INVALID_ARGUMENT") == 1
    assert sample("shoptwin_rpc_duration_seconds_count", code="OK") == 1
    assert sample("shoptwin_rpc_in_flight") == 0
    logging.getLogger().handlers.clear()


async def test_health_check_and_watch_follow_shutdown() -> None:
    async with running_service(PROBE) as svc:
        stub = health_pb2_grpc.HealthStub(svc.channel)
        name = "shoptwin.v1.EchoService"
        check = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=name))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        await svc.server.health.enter_graceful_shutdown()
        second = await asyncio.wait_for(watch.read(), timeout=5)
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()


async def test_reflection_lists_the_services() -> None:
    async with running_service("recommendation") as svc:
        stub = reflection_pb2_grpc.ServerReflectionStub(svc.channel)
        names: list[str] = []
        async for reply in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            names = [s.name for s in reply.list_services_response.service]
        assert "shoptwin.v1.RecommendationService" in names
        assert "grpc.health.v1.Health" in names


async def test_unbuilt_rpc_answers_unimplemented() -> None:
    from shoptwin.v1 import intent_pb2, intent_pb2_grpc

    async with running_service("intent") as svc:
        stub = intent_pb2_grpc.IntentServiceStub(svc.channel)
        try:
            await stub.GetModelInfo(intent_pb2.GetIntentModelInfoRequest())
        except grpc.aio.AioRpcError as exc:
            # Before the service is built: UNIMPLEMENTED; once built, a real answer or
            # UNAVAILABLE (no model); never UNKNOWN.
            assert exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE)


async def test_bearer_token_auth() -> None:
    async with running_service(PROBE, auth_token=TOKEN) as svc:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo(svc.channel, b"x")
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo(svc.channel, b"x", metadata=(("authorization", "Bearer wrong-token"),))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Health stays open for probes.
        health = health_pb2_grpc.HealthStub(svc.channel)
        reply = await health.Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        authed = create_aio_channel(svc.target, ChannelOptions(auth_token=TOKEN, retry=None))
        assert await echo(authed, b"x") == b"x"
        await authed.close(None)


async def test_tls(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    async with running_service(
        PROBE,
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
        channel_options=ChannelOptions(retry=None, tls=ClientTLS(ca_cert=certs.ca)),
    ) as svc:
        assert await echo(svc.channel, b"secure") == b"secure"
        plain = grpc.aio.insecure_channel(svc.target)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo(plain, b"x", timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        await plain.close(None)
        untrusting = create_aio_channel(
            svc.target, ChannelOptions(retry=None, tls=ClientTLS(ca_cert=certs.other_ca))
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo(untrusting, b"x", timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        await untrusting.close(None)


async def test_mutual_tls(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    client = ClientTLS(ca_cert=certs.ca, client_cert=certs.client_cert, client_key=certs.client_key)
    async with running_service(
        PROBE,
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
        tls_client_ca=certs.ca,
        channel_options=ChannelOptions(retry=None, tls=client),
    ) as svc:
        assert await echo(svc.channel, b"mutual") == b"mutual"
        for tls in (
            ClientTLS(ca_cert=certs.ca),  # no client certificate
            ClientTLS(  # a certificate from a CA the server does not trust
                ca_cert=certs.ca, client_cert=certs.stranger_cert, client_key=certs.stranger_key
            ),
        ):
            channel = create_aio_channel(svc.target, ChannelOptions(retry=None, tls=tls))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await echo(channel, b"x", timeout=3)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            await channel.close(None)


async def test_max_message_size_is_enforced() -> None:
    async with running_service(PROBE, max_message_bytes=4096) as svc:
        assert await echo(svc.channel, b"a" * 1000) == b"a" * 1000
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo(svc.channel, b"a" * 10_000)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_graceful_stop_lets_in_flight_calls_finish() -> None:
    server = ServiceServer(PROBE, ServerSettings(grace_s=5.0), None)
    port = await server.start()
    channel = create_aio_channel(f"127.0.0.1:{port}", ChannelOptions(retry=None))
    in_flight = asyncio.ensure_future(echo(channel, b"slow:0.5"))
    await asyncio.sleep(0.1)
    await server.stop()
    assert await in_flight == b"slow:0.5"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await echo(channel, b"late", timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    await channel.close(None)


async def test_client_retries_unavailable_until_server_appears() -> None:
    from services.runtime.process import free_port

    port = free_port()
    channel = create_aio_channel(f"127.0.0.1:{port}", ChannelOptions())
    server = ServiceServer(PROBE, ServerSettings(port=port, grace_s=0.5), None)

    async def start_later() -> None:
        await asyncio.sleep(0.3)
        await server.start()

    starter = asyncio.ensure_future(start_later())
    # wait_for_ready holds the call until the channel connects instead of failing fast.
    assert await echo(channel, b"x", wait_for_ready=True, timeout=10) == b"x"
    await starter
    await channel.close(None)
    await server.stop(0.5)
