"""``shoptwin bench telemetry``: readings per second durably acknowledged over gRPC, with the
server in a child process, beside two baselines measured in the same run.

The client streams pre-serialized batches (as TSBS pre-generates its data) over a few Upload
streams, each with a window of unacknowledged batches in flight; a device always belongs to
one stream, so its sequence numbers arrive in order. Baselines: the bare echo RPC carrying a
payload of one batch's size (the transport ceiling, as readings/s), and bare SQLite
``executemany`` of the same rows into the same table in-process (the storage ceiling).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.runtime.bench import LatencyStats, summarize
from services.runtime.client import ChannelOptions, create_aio_channel
from services.runtime.process import ServiceProcess, free_port
from services.telemetry.codec import decode_batch
from services.telemetry.model import MAX_FUTURE_MS
from services.telemetry.store import SCHEMA
from shoptwin.v1 import telemetry_pb2

UPLOAD_METHOD = "/shoptwin.v1.TelemetryService/Upload"
LONDON = (51.5074, -0.1278)


@dataclass(frozen=True)
class Workload:
    """Pre-serialized Upload batches per stream."""

    streams: list[list[bytes]]
    readings: int
    batch_size: int
    batch_bytes: float


def make_workload(
    devices: int, readings: int, batch_size: int, streams: int, seed: int
) -> Workload:
    """Readings of ``devices`` vans moving around London, a reading per device per second,
    cut into batches of ``batch_size``; device d uploads on stream d % streams."""
    rng = random.Random(seed)
    per_device = max(1, readings // devices)
    start_s = int(time.time()) - per_device - 60
    out: list[list[bytes]] = []
    total = 0
    nbytes = 0
    nbatches = 0
    for s in range(streams):
        own = [d for d in range(devices) if d % streams == s]
        if not own:
            continue
        pos = {
            d: [LONDON[0] + rng.uniform(-0.2, 0.2), LONDON[1] + rng.uniform(-0.3, 0.3)] for d in own
        }
        batches: list[bytes] = []
        request = telemetry_pb2.UploadRequest(batch_id=1)
        for step in range(per_device):
            for d in own:
                p = pos[d]
                p[0] += rng.uniform(-1e-4, 1e-4)
                p[1] += rng.uniform(-1e-4, 1e-4)
                r = request.readings.add(
                    device_id=f"van-{d:05d}",
                    sequence=step + 1,
                    fleet_id=f"fleet-{d % 10}",
                    speed_mps=rng.uniform(0, 20),
                    heading_deg=rng.uniform(0, 360),
                    temperature_c=rng.uniform(3, 6),
                    battery_pct=80.0,
                    door_open=False,
                )
                r.time.seconds = start_s + step
                r.position.latitude = p[0]
                r.position.longitude = p[1]
                if len(request.readings) == batch_size:
                    data = request.SerializeToString()
                    batches.append(data)
                    nbytes += len(data)
                    total += batch_size
                    request = telemetry_pb2.UploadRequest(batch_id=len(batches) + 1)
        if request.readings:
            data = request.SerializeToString()
            batches.append(data)
            nbytes += len(data)
            total += len(request.readings)
        nbatches += len(batches)
        out.append(batches)
    return Workload(out, total, batch_size, nbytes / max(1, nbatches))


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far; Linux only,
    NaN elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of process ``pid`` (Linux; empty elsewhere)."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


@dataclass
class UploadResult:
    readings_acked: int
    stored: int
    duplicates: int
    rejected: int
    seconds: float
    latency: LatencyStats
    #: CPU seconds the server and this client process spent during the upload.
    server_cpu_s: float = math.nan
    client_cpu_s: float = math.nan
    #: CPU seconds of the server's main thread (the event loop: gRPC, decoding, alerts).
    server_main_thread_cpu_s: float = math.nan
    #: CPU seconds of the server's busiest other thread (the SQLite writer).
    server_busiest_other_thread_cpu_s: float = math.nan

    @property
    def readings_per_s(self) -> float:
        return self.readings_acked / self.seconds if self.seconds > 0 else 0.0


async def upload(
    target: str, workload: Workload, window: int, server_pid: int | None = None
) -> UploadResult:
    """Stream every batch of the workload; each stream keeps ``window`` batches unacked."""
    channel = create_aio_channel(target, ChannelOptions(retry=None, default_timeout_s=None))
    latencies: list[float] = []
    counts = {"acked": 0, "stored": 0, "duplicates": 0, "rejected": 0}
    try:
        method = channel.stream_stream(
            UPLOAD_METHOD,
            request_serializer=None,
            response_deserializer=telemetry_pb2.UploadAck.FromString,
        )

        async def run_stream(batches: list[bytes]) -> None:
            call: Any = method()  # type: ignore[call-arg]  # write()/read() API
            slots = asyncio.Semaphore(window)
            sent_at: dict[int, float] = {}

            async def writer() -> None:
                for i, data in enumerate(batches):
                    await slots.acquire()
                    sent_at[i + 1] = time.perf_counter()
                    await call.write(data)
                await call.done_writing()

            async def reader() -> None:
                for _ in batches:
                    ack = await call.read()
                    latencies.append(time.perf_counter() - sent_at.pop(ack.batch_id))
                    counts["acked"] += ack.stored + ack.duplicates
                    counts["stored"] += ack.stored
                    counts["duplicates"] += ack.duplicates
                    counts["rejected"] += len(ack.rejected)
                    slots.release()

            await asyncio.gather(writer(), reader())

        server_cpu = process_cpu_s(server_pid) if server_pid else math.nan
        threads_before = thread_cpu_s(server_pid) if server_pid else {}
        client_cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(run_stream(b) for b in workload.streams))
        seconds = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        if server_pid:
            server_cpu = process_cpu_s(server_pid) - server_cpu
        threads_after = thread_cpu_s(server_pid) if server_pid else {}
        deltas = {t: c - threads_before.get(t, 0.0) for t, c in threads_after.items()}
        main_cpu = deltas.pop(server_pid, math.nan) if server_pid else math.nan
        other_cpu = max(deltas.values(), default=math.nan)
    finally:
        await channel.close(None)
    stats = summarize("upload", window * len(workload.streams), latencies, 0, seconds)
    return UploadResult(
        counts["acked"],
        counts["stored"],
        counts["duplicates"],
        counts["rejected"],
        seconds,
        stats,
        server_cpu,
        client_cpu,
        main_cpu,
        other_cpu,
    )


def sqlite_baseline(workload: Workload, commit_readings: int, synchronous: str) -> float:
    """Readings/s of bare ``executemany`` of the workload's rows (decoded beforehand) into the
    service's table, ``commit_readings`` per transaction, in this process."""
    rows = []
    for batches in workload.streams:
        for data in batches:
            request = telemetry_pb2.UploadRequest.FromString(data)
            decoded, _, _ = decode_batch(request.readings, int(time.time() * 1000), MAX_FUTURE_MS)
            rows.extend(decoded)
    with tempfile.TemporaryDirectory(prefix="shoptwin-bench-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "baseline.sqlite3", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.execute("PRAGMA cache_size=-65536")
        conn.executescript(SCHEMA)
        started = time.perf_counter()
        for i in range(0, len(rows), commit_readings):
            chunk = sorted(rows[i : i + commit_readings], key=lambda r: (r[0], r[1]))
            conn.execute("BEGIN")
            conn.executemany(
                f"INSERT OR IGNORE INTO readings VALUES ({', '.join('?' * 11)})", chunk
            )
            conn.execute("COMMIT")
        seconds = time.perf_counter() - started
        conn.close()
    return len(rows) / seconds if seconds > 0 else math.nan


def count_stored(database: Path) -> int:
    conn = sqlite3.connect(database)
    try:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    finally:
        conn.close()


def start_server(
    database: Path, synchronous: str, extra: list[str] | None = None, log_path: Path | None = None
) -> ServiceProcess:
    """A telemetry server in its own process on ``database``, SERVING on return."""
    proc = ServiceProcess(
        "telemetry",
        free_port(),
        extra_args=[
            "--metrics-port",
            "0",
            "--log-level",
            "warning",
            "--database",
            str(database),
            "--synchronous",
            synchronous,
            *(extra or []),
        ],
        log_path=log_path,
    )
    proc.start()
    proc.wait_serving(60)
    return proc
