"""The echo baseline that service benchmarks measure in the same run as their own RPCs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from services.runtime.bench import LatencyStats, closed_loop, open_loop
from services.runtime.client import ChannelOptions, create_aio_channel
from services.runtime.process import ServiceProcess, free_port
from shoptwin.v1 import echo_pb2, echo_pb2_grpc


def start_echo_process(log_path: Path | None = None) -> ServiceProcess:
    """An echo server in its own process (as the measured service runs), SERVING on return."""
    proc = ServiceProcess(
        "echo",
        free_port(),
        extra_args=["--metrics-port", "0", "--log-level", "warning"],
        log_path=log_path,
    )
    proc.start()
    proc.wait_serving(60)
    return proc


@asynccontextmanager
async def echo_caller(
    target: str, payload_bytes: int, options: ChannelOptions | None = None
) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """``call(index)`` sending one Echo of ``payload_bytes`` over one channel, closed after."""
    channel = create_aio_channel(target, options or ChannelOptions())
    try:
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        request = echo_pb2.EchoRequest(payload=b"x" * payload_bytes)

        async def call(_index: int) -> None:
            await stub.Echo(request)

        yield call
    finally:
        await channel.close(None)


async def measure_echo(
    target: str,
    concurrencies: Sequence[int],
    *,
    duration_s: float,
    payload_bytes: int = 64,
    options: ChannelOptions | None = None,
) -> list[LatencyStats]:
    """Closed-loop echo throughput and latency at each concurrency, over one reused channel."""
    async with echo_caller(target, payload_bytes, options) as call:
        results = []
        for concurrency in concurrencies:
            results.append(
                await closed_loop("echo", call, concurrency=concurrency, duration_s=duration_s)
            )
            await asyncio.sleep(0.2)
        return results


async def measure_echo_open_loop(
    target: str, rate: float, *, duration_s: float, payload_bytes: int = 64
) -> LatencyStats:
    """Echo calls arriving at ``rate`` per second (open loop): the latency the runtime, the
    load generator and the machine give any service at that rate."""
    async with echo_caller(target, payload_bytes) as call:
        return await open_loop("echo@rate", call, rate=rate, duration_s=duration_s)
