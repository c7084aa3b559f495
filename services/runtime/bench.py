"""The benchmark harness every ``shoptwin bench`` command uses.

Machines here are noisy, so every benchmark measures a baseline (the bare echo RPC through the
same runtime, or a bare loop) in the same run and reports ratios against it. Each run prints a
table and can write JSON with the run's metadata (commit, host, Python, arguments).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


def settle_heap() -> None:
    """Collect, then freeze, everything this process holds before it generates load.

    A bench process that built or loaded a model keeps hundreds of thousands of tracked
    objects; a full collection among them stopped the recommendation bench's load generator
    for 90-110 ms in the middle of a measurement, which the open loop then counted as the
    service's latency. Frozen objects are not rescanned (the servers do the same once they
    are up, see :func:`services.runtime.server.serve_until_signalled`)."""
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class LatencyStats:
    """Throughput and latency percentiles of one measured load level."""

    label: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    qps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    label: str, concurrency: int, latencies_s: Sequence[float], errors: int, seconds: float
) -> LatencyStats:
    """Percentiles (milliseconds) and throughput of successful calls."""
    values = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    if values.size == 0:
        values = np.asarray([float("nan")])
    p50, p90, p99, p999 = np.percentile(values, [50, 90, 99, 99.9])
    ok = len(latencies_s)
    return LatencyStats(
        label=label,
        concurrency=concurrency,
        requests=ok,
        errors=errors,
        seconds=round(seconds, 3),
        qps=round(ok / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=round(float(p50), 3),
        p90_ms=round(float(p90), 3),
        p99_ms=round(float(p99), 3),
        p999_ms=round(float(p999), 3),
        max_ms=round(float(np.max(values)), 3),
    )


async def closed_loop(
    label: str,
    call: Callable[[int], Awaitable[Any]],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.5,
    is_error: Callable[[BaseException], bool] = lambda _exc: True,
) -> LatencyStats:
    """``concurrency`` callers in one event loop, each issuing ``call(i)`` back to back.

    ``call`` receives a running request index (to vary inputs deterministically). Exceptions
    count as errors when ``is_error`` says so and are otherwise re-raised.
    """
    latencies: list[float] = []
    errors = 0
    counter = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s

    async def worker() -> None:
        nonlocal errors, counter
        while True:
            now = loop.time()
            if now >= stop_at:
                return
            index = counter
            counter += 1
            t0 = time.perf_counter()
            try:
                await call(index)
            except Exception as exc:
                if not is_error(exc):
                    raise
                if now >= measure_from:
                    errors += 1
                continue
            if now >= measure_from:
                latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarize(label, concurrency, latencies, errors, duration_s)


async def open_loop(
    label: str,
    call: Callable[[int], Awaitable[Any]],
    *,
    rate: float,
    duration_s: float,
    warmup_s: float = 0.5,
) -> LatencyStats:
    """Arrivals at a fixed rate whether or not earlier calls finished (no coordinated omission)."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    tasks: list[asyncio.Task[None]] = []
    start = loop.time()
    measure_from = start + warmup_s

    async def one(index: int, scheduled: float) -> None:
        nonlocal errors
        try:
            await call(index)
        except Exception:
            if scheduled >= measure_from:
                errors += 1
            return
        if scheduled >= measure_from:
            # Latency from the scheduled arrival, so queueing before the send counts.
            latencies.append(loop.time() - scheduled)

    total = int(rate * (duration_s + warmup_s))
    for index in range(total):
        scheduled = start + index / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    await asyncio.gather(*tasks)
    return summarize(label, 0, latencies, errors, duration_s)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_metadata(arguments: dict[str, Any]) -> dict[str, Any]:
    """What a reader needs to reproduce a result: commit, machine, Python, arguments."""
    return {
        "commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in arguments.items()},
    }


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain fixed-width table."""
    cells = [[str(col) for col in columns]]
    for row in rows:
        cells.append([_fmt(row.get(col, "")) for col in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
