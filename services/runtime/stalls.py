"""Stalls of a server process: how late its event loop runs a timer, and how long the
garbage collector stops the world.

Both hit every call the process holds at that moment, not one call, so a per-call latency
histogram shows them only as a fatter tail. They tell a slow handler from a stalled process
(docs/runtime.md; docs/capacity-runs.md "Runs 24-29" reads them under open-loop load).

- ``shoptwin_event_loop_lag_seconds``: a probe task sleeps ``interval`` and records how much
  later than asked it woke up. That is the time the loop was busy (or the process was not
  scheduled) when the timer fell due. The probe waits out a stall once, so a stall of any
  length is one late probe: the share of probes late by over x counts stalls, and it
  understates the share of time the loop was x behind by about the stalls' length over
  the probe's period.
- ``shoptwin_gc_pause_seconds``: each cyclic-collector run, from ``gc.callbacks``, by
  generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from services.runtime.metrics import LATENCY_BUCKETS

#: The RPC latency buckets from 0.5 ms to 2.5 s: from well under a scheduler slice to a
#: visible freeze.
STALL_BUCKETS = LATENCY_BUCKETS[: LATENCY_BUCKETS.index(2.5) + 1]


class StallMonitor:
    """The loop-lag probe and the GC-pause callback of one serving process."""

    def __init__(self, registry: CollectorRegistry | None, service: str, interval_s: float):
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self._lag = Histogram(
            "shoptwin_event_loop_lag_seconds",
            "How much later than scheduled the event loop ran a periodic probe timer",
            ["service"],
            buckets=STALL_BUCKETS,
            registry=registry,
        ).labels(service)
        pause = Histogram(
            "shoptwin_gc_pause_seconds",
            "Stop-the-world time of each cyclic garbage collection, by generation",
            ["service", "generation"],
            buckets=STALL_BUCKETS,
            registry=registry,
        )
        self._pause = [pause.labels(service, str(generation)) for generation in range(3)]
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the probe on the running loop and hook the collector."""
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._probe(), name="loop-lag")

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self._lag.observe(max(0.0, loop.time() - due))

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            generation = min(int(info.get("generation", 0)), 2)
            self._pause[generation].observe(time.perf_counter() - self._gc_started)
