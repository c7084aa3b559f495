"""Recommend's micro-batcher: lone calls go at once; under load a batch waits for company (the
previous batch's size) up to the window; every caller gets its own answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from services.recommendation.engine import (
    ItemFilter,
    MicroBatcher,
    PreparedQuery,
    Query,
    RankedItems,
    Recommendation,
    ServingState,
)
from services.recommendation.store import StoredEvent


class GatedRanker:
    """Records each batch's users and holds it until the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.sent_at: list[float] = []
        self.gates: list[asyncio.Event] = []
        self.arrived = asyncio.Event()

    async def rank(self, state: ServingState, prepared: list[PreparedQuery]) -> list[RankedItems]:
        self.batches.append([p.query.user_id for p in prepared])
        self.sent_at.append(asyncio.get_running_loop().time())
        gate = asyncio.Event()
        self.gates.append(gate)
        self.arrived.set()
        await gate.wait()
        return [RankedItems([p.query.user_id], [1.0], [""]) for p in prepared]

    async def next_batch(self) -> int:
        """Wait until a batch reaches the ranker; its index."""
        await self.arrived.wait()
        self.arrived.clear()
        return len(self.batches) - 1

    # The rest of the Ranker protocol: the batcher never calls it.
    def start(self) -> None: ...
    async def stop(self) -> None: ...
    def begin_load(self, directory: Path) -> object: ...
    async def wait_loaded(self, token: object) -> None: ...
    def abandon_load(self, token: object) -> None: ...
    def activate(self, token: object, state: ServingState, events: list[StoredEvent]) -> None: ...
    def apply_events(self, state: ServingState, events: list[StoredEvent]) -> None: ...
    def apply_catalog(self, state: ServingState | None, entries: Any) -> None: ...


STATE: Any = SimpleNamespace(model=SimpleNamespace(metadata=SimpleNamespace(version="v1")))


def query(user: str) -> PreparedQuery:
    return PreparedQuery(Query(user, 1, ItemFilter()), None, np.empty(0, np.int64), [], None)


def call(batcher: MicroBatcher, user: str) -> asyncio.Task[Recommendation]:
    return asyncio.create_task(batcher.submit(STATE, query(user)))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def lone_call_then_pair(
    batcher: MicroBatcher, ranker: GatedRanker
) -> list[asyncio.Task[Recommendation]]:
    """Batch 0 is "a" alone; "b" and "c" queue behind it and form batch 1, which is left at
    the ranker (not released)."""
    first = call(batcher, "a")
    assert await ranker.next_batch() == 0  # idle service: no wait, window or not
    pair = [call(batcher, "b"), call(batcher, "c")]
    await settle()
    ranker.gates[0].set()
    assert await ranker.next_batch() == 1  # queued while "a" was ranked: sent together
    return [first, *pair]


async def test_lone_calls_are_sent_at_once_and_a_batch_waits_for_company_under_load() -> None:
    ranker = GatedRanker()
    batcher = MicroBatcher(ranker, window_s=60.0, max_batch=64)
    batcher.start()
    try:
        a, b, c = await lone_call_then_pair(batcher, ranker)
        d = call(batcher, "d")
        ranker.gates[1].set()
        await settle()
        # The previous batch had 2 calls: "d" waits for a second one (the window is long).
        assert len(ranker.batches) == 2
        e = call(batcher, "e")
        assert await ranker.next_batch() == 2
        ranker.gates[2].set()
        answers = await asyncio.gather(a, b, c, d, e)
    finally:
        await batcher.stop()
    assert ranker.batches == [["a"], ["b", "c"], ["d", "e"]]
    assert [r.items.item_ids for r in answers] == [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert all(r.model_version == "v1" for r in answers)


async def test_the_window_bounds_the_wait_for_company() -> None:
    ranker = GatedRanker()
    window = 0.05
    batcher = MicroBatcher(ranker, window_s=window, max_batch=64)
    batcher.start()
    loop = asyncio.get_running_loop()
    try:
        earlier = await lone_call_then_pair(batcher, ranker)
        ranker.gates[1].set()
        await asyncio.gather(*earlier)
        submitted = loop.time()
        lone = call(batcher, "d")
        await ranker.next_batch()  # sent alone once it has waited the window
        ranker.gates[2].set()
        await lone
    finally:
        await batcher.stop()
    assert ranker.batches[2] == ["d"]
    assert ranker.sent_at[2] - submitted >= window * 0.9


async def test_without_a_window_a_batch_never_waits() -> None:
    ranker = GatedRanker()
    batcher = MicroBatcher(ranker, window_s=0.0, max_batch=64)
    batcher.start()
    try:
        earlier = await lone_call_then_pair(batcher, ranker)
        lone = call(batcher, "d")
        ranker.gates[1].set()
        assert await ranker.next_batch() == 2
        ranker.gates[2].set()
        await asyncio.gather(*earlier, lone)
    finally:
        await batcher.stop()
    assert ranker.batches == [["a"], ["b", "c"], ["d"]]


async def test_a_batch_as_large_as_the_previous_one_is_sent_without_waiting() -> None:
    ranker = GatedRanker()
    batcher = MicroBatcher(ranker, window_s=60.0, max_batch=2)
    batcher.start()
    try:
        first = call(batcher, "a")
        await ranker.next_batch()
        queued = [call(batcher, u) for u in "bcde"]
        await settle()
        ranker.gates[0].set()
        await ranker.next_batch()
        ranker.gates[1].set()
        await ranker.next_batch()  # "d" and "e" were queued already: no wait
        ranker.gates[2].set()
        await asyncio.gather(first, *queued)
    finally:
        await batcher.stop()
    assert ranker.batches == [["a"], ["b", "c"], ["d", "e"]]
