"""Helpers for tests: a service on a real in-process server bound to an ephemeral port."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from grpc import aio

from services.registry import get_definition
from services.runtime.client import ChannelOptions, create_aio_channel
from services.runtime.config import ServerSettings
from services.runtime.metrics import RpcMetrics
from services.runtime.server import ServiceDefinition, ServiceServer


@dataclasses.dataclass
class RunningService:
    server: ServiceServer
    target: str
    channel: aio.Channel


@asynccontextmanager
async def running_service(
    service: str | ServiceDefinition,
    options: Any = None,
    *,
    channel_options: ChannelOptions | None = None,
    metrics: RpcMetrics | None = None,
    **settings: Any,
) -> AsyncIterator[RunningService]:
    """Start ``service`` on 127.0.0.1 with a free port, yield it and a channel, then stop it.

    ``settings`` override :class:`ServerSettings` fields (``auth_token=...``, ``tls_cert=...``);
    ``options`` defaults to the service's options dataclass with its defaults; ``metrics``
    (with a registry) turns on the RPC and the service's own metrics.
    """
    definition = get_definition(service) if isinstance(service, str) else service
    if options is None:
        options = definition.load_options_type()()
    server_settings = dataclasses.replace(ServerSettings(grace_s=1.0), **settings)
    server = ServiceServer(definition, server_settings, options, metrics=metrics)
    port = await server.start()
    target = f"127.0.0.1:{port}"
    channel = create_aio_channel(target, channel_options or ChannelOptions(retry=None))
    try:
        yield RunningService(server, target, channel)
    finally:
        await channel.close(None)
        await server.stop(0.5)
