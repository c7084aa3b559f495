"""The micro-batcher: concurrent requests share batches, results go back to their callers."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.intent.batching import MicroBatcher


async def test_concurrent_requests_share_batches_and_keep_order() -> None:
    seen: list[list[str]] = []

    def predict(texts: list[str]) -> list[str]:
        seen.append(list(texts))
        time.sleep(0.05)  # inference in progress: later callers queue up behind it
        return [t.upper() for t in texts]

    batcher: MicroBatcher[str] = MicroBatcher(predict, max_batch=64)
    batcher.start()
    try:
        texts = [f"m{i}" for i in range(20)]
        results = await asyncio.gather(*(batcher.submit([t]) for t in texts))
        many = await batcher.submit(["a", "b", "c"])
    finally:
        await batcher.stop()
    assert [r[0] for r in results] == [t.upper() for t in texts]
    assert many == ["A", "B", "C"]
    assert len(seen) < 20  # shared batches, not one call per request
    assert batcher.largest_batch > 1


async def test_a_failing_batch_fails_its_callers_only() -> None:
    def predict(texts: list[str]) -> list[str]:
        if "boom" in texts:
            raise RuntimeError("inference failed")
        return texts

    batcher: MicroBatcher[str] = MicroBatcher(predict)
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="inference failed"):
            await batcher.submit(["boom"])
        assert await batcher.submit(["ok"]) == ["ok"]
    finally:
        await batcher.stop()


async def test_batch_metrics_count_each_batch_its_size_and_time() -> None:
    from prometheus_client import CollectorRegistry

    from services.runtime.metrics import BatchMetrics

    sizes: list[int] = []

    def predict(texts: list[str]) -> list[str]:
        sizes.append(len(texts))
        time.sleep(0.02)
        return texts

    registry = CollectorRegistry()
    batcher: MicroBatcher[str] = MicroBatcher(
        predict, max_batch=64, metrics=BatchMetrics.create(registry, "intent")
    )
    batcher.start()
    try:
        await asyncio.gather(*(batcher.submit([f"m{i}"]) for i in range(10)))
    finally:
        await batcher.stop()

    def sample(name: str) -> float:
        return registry.get_sample_value(name, {"service": "intent"}) or 0.0

    assert (
        sample("shoptwin_batch_size_count")
        == len(sizes)
        == sample("shoptwin_batch_duration_seconds_count")
    )
    assert sample("shoptwin_batch_size_sum") == sum(sizes) == 10
    # Each batch slept 20 ms in the model: the duration is the model's time, not zero.
    assert 0.02 * len(sizes) <= sample("shoptwin_batch_duration_seconds_sum") < 5.0
