"""Each service starts under the runtime; RPCs not built yet answer UNIMPLEMENTED."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.registry import PRODUCT_SERVICES
from services.runtime.testing import running_service


@pytest.mark.parametrize("name", [d.name for d in PRODUCT_SERVICES])
async def test_service_starts_and_reports_serving(name: str) -> None:
    async with running_service(name) as svc:
        stub = health_pb2_grpc.HealthStub(svc.channel)
        for service_name in ("", *svc.server.app.grpc_service_names):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service_name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
