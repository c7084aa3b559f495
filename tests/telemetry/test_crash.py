"""Crash test: kill -9 the service mid-stream, restart it on the same database, let the devices
resend what was not acknowledged. Every acknowledged reading is present exactly once and the
count stored equals the count sent."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import grpc

from services.runtime.client import ChannelOptions, create_aio_channel
from services.runtime.process import ServiceProcess, free_port
from shoptwin.v1 import telemetry_pb2, telemetry_pb2_grpc
from tests.telemetry.helpers import batch, reading

DEVICES = [f"van-{i}" for i in range(6)]
PER_DEVICE = 1500
BATCH = 60
WINDOW = 8


def start_server(database: Path, log: Path) -> ServiceProcess:
    proc = ServiceProcess(
        "telemetry",
        free_port(),
        extra_args=[
            "--database",
            str(database),
            "--metrics-port",
            "0",
            "--log-level",
            "warning",
        ],
        log_path=log,
    )
    proc.start()
    proc.wait_serving(60)
    return proc


def unacked_batches(acked: dict[str, int]) -> list[telemetry_pb2.UploadRequest]:
    """Everything not acknowledged, devices interleaved, each device in sequence order."""
    pending = [
        reading(d, s, temperature=5.0)
        for s in range(1, PER_DEVICE + 1)
        for d in DEVICES
        if s > acked[d]
    ]
    return [batch(i + 1, pending[i : i + BATCH]) for i in range(0, len(pending), BATCH)]


async def upload(
    proc: ServiceProcess, acked: dict[str, int], kill_after_acks: int | None
) -> dict[str, Any]:
    """Stream the unacknowledged readings with WINDOW batches in flight, updating ``acked``
    from the acks; with ``kill_after_acks``, SIGKILL the server after that many acks."""
    batches = unacked_batches(acked)
    channel = create_aio_channel(proc.target, ChannelOptions(retry=None, default_timeout_s=None))
    stats = {"sent": 0, "acks": 0, "stored": 0, "duplicates": 0, "in_flight_at_kill": 0}
    try:
        call: Any = telemetry_pb2_grpc.TelemetryServiceStub(channel).Upload()
        slots = asyncio.Semaphore(WINDOW)

        async def writer() -> None:
            for request in batches:
                await slots.acquire()
                await call.write(request)
                stats["sent"] += 1
            await call.done_writing()

        async def reader() -> None:
            while True:
                ack = await call.read()
                if ack is grpc.aio.EOF:
                    return
                stats["acks"] += 1
                stats["stored"] += ack.stored
                stats["duplicates"] += ack.duplicates
                assert not ack.rejected
                for device_ack in ack.device_acks:
                    assert device_ack.acked_sequence >= acked[device_ack.device_id]
                    acked[device_ack.device_id] = device_ack.acked_sequence
                slots.release()
                if kill_after_acks is not None and stats["acks"] == kill_after_acks:
                    stats["in_flight_at_kill"] = stats["sent"] - stats["acks"]
                    assert proc.process is not None
                    proc.process.kill()  # SIGKILL: no shutdown, no flush
                    return

        writing = asyncio.create_task(writer())
        await reader()
        if kill_after_acks is None:
            await writing
        else:
            # The server is gone: stop writing (a real device would reconnect and resend).
            call.cancel()
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
    finally:
        await channel.close(None)
    return stats


def stored_by_device(database: Path) -> dict[str, tuple[int, int, int]]:
    """device -> (count, min sequence, max sequence) straight from the database file."""
    conn = sqlite3.connect(database)
    try:
        return {
            d: (n, lo, hi)
            for d, n, lo, hi in conn.execute(
                "SELECT device_id, count(*), min(sequence), max(sequence) FROM readings "
                "GROUP BY device_id"
            )
        }
    finally:
        conn.close()


def count_at_or_below(database: Path, acked: dict[str, int]) -> dict[str, int]:
    conn = sqlite3.connect(database)
    try:
        return {
            d: conn.execute(
                "SELECT count(*) FROM readings WHERE device_id = ? AND sequence <= ?", (d, a)
            ).fetchone()[0]
            for d, a in acked.items()
        }
    finally:
        conn.close()


async def test_kill_9_mid_stream_then_resend_stores_everything_exactly_once(
    tmp_path: Path,
) -> None:
    database = tmp_path / "telemetry.sqlite3"
    log = tmp_path / "server.log"
    acked = dict.fromkeys(DEVICES, 0)

    first = start_server(database, log)
    try:
        before = await asyncio.wait_for(upload(first, acked, kill_after_acks=20), 120)
        assert first.wait(20) == -9
    finally:
        first.stop()
    acked_at_crash = dict(acked)
    # The crash really was mid-stream: batches were in flight and readings unacknowledged.
    assert before["in_flight_at_kill"] > 0
    assert 0 < sum(acked_at_crash.values()) < len(DEVICES) * PER_DEVICE
    # Every acknowledged reading survived the kill.
    assert count_at_or_below(database, acked_at_crash) == acked_at_crash

    second = start_server(database, log)
    try:
        after = await asyncio.wait_for(upload(second, acked, kill_after_acks=None), 120)
        assert second.stop() == 0
    finally:
        second.stop()
    assert acked == dict.fromkeys(DEVICES, PER_DEVICE)
    # Exactly once: per device, sequences 1..PER_DEVICE, as many rows as readings sent.
    assert stored_by_device(database) == dict.fromkeys(DEVICES, (PER_DEVICE, 1, PER_DEVICE))
    resent = sum(PER_DEVICE - a for a in acked_at_crash.values())
    assert after["stored"] + after["duplicates"] == resent
    # Readings committed after the last ack the client saw come back as duplicates.
    assert after["stored"] <= resent
    print(
        f"crash test: acked at kill {sum(acked_at_crash.values())}, batches in flight "
        f"{before['in_flight_at_kill']}, resent {resent}, of which already durable "
        f"(duplicates) {after['duplicates']}, stored after restart {after['stored']}, "
        f"total stored {len(DEVICES) * PER_DEVICE} = sent"
    )
