"""The stall monitor: a blocked event loop and a garbage collection show in its histograms."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from prometheus_client import CollectorRegistry

from services.runtime.stalls import StallMonitor


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_blocked_loop_and_a_collection_are_recorded() -> None:
    registry = CollectorRegistry()

    async def run() -> None:
        monitor = StallMonitor(registry, "svc", interval_s=0.005)
        monitor.start()
        await asyncio.sleep(0.05)  # a few on-time probes
        time.sleep(0.06)  # noqa: ASYNC251 (the point: the loop blocked, the probe runs late)
        await asyncio.sleep(0.02)
        gc.collect()
        await monitor.stop()
        assert monitor._on_gc not in gc.callbacks

    asyncio.run(run())
    probes = _value(registry, "shoptwin_event_loop_lag_seconds_count", service="svc")
    assert probes >= 5
    late = probes - _value(
        registry, "shoptwin_event_loop_lag_seconds_bucket", service="svc", le="0.025"
    )
    assert late >= 1  # the blocked stretch, 50 ms or more behind
    assert _value(registry, "shoptwin_event_loop_lag_seconds_sum", service="svc") >= 0.04
    full = _value(registry, "shoptwin_gc_pause_seconds_count", service="svc", generation="2")
    assert full >= 1


def test_the_probe_needs_a_positive_period() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        StallMonitor(CollectorRegistry(), "svc", interval_s=0.0)
