"""Fan-out of stored readings (and alerts) to stream subscribers.

Each subscriber has its own bounded queue. Publishing never waits: when a subscriber's queue is
full its *oldest* entries are dropped (and counted), so a slow subscriber sees the newest state
late rather than slowing ingestion or other subscribers. For dispatch, which wants where a
vehicle is now, newer beats complete.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection
from typing import Generic, TypeVar

T = TypeVar("T")


class Subscription(Generic[T]):
    """One subscriber: a filter and a bounded queue, iterated asynchronously."""

    def __init__(self, device_ids: Collection[str], fleet_id: str, maxlen: int) -> None:
        self.device_ids = frozenset(device_ids) or None
        self.fleet_id = fleet_id or None
        self.queue: deque[T] = deque(maxlen=maxlen)
        self.dropped = 0
        self._ready = asyncio.Event()
        self.closed = False

    def wants(self, device_id: str, fleet_id: str) -> bool:
        if self.device_ids is not None and device_id not in self.device_ids:
            return False
        return self.fleet_id is None or fleet_id == self.fleet_id

    def push(self, item: T) -> None:
        queue = self.queue
        if len(queue) == queue.maxlen:
            self.dropped += 1  # deque(maxlen) drops the oldest on append
        queue.append(item)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[T]:
        queue = self.queue
        while True:
            while queue:
                yield queue.popleft()
            if self.closed:
                return
            self._ready.clear()
            await self._ready.wait()


class Hub(Generic[T]):
    """The subscribers of one stream (live readings or alerts)."""

    def __init__(self, maxlen: int) -> None:
        self._maxlen = maxlen
        self._subscribers: list[Subscription[T]] = []

    def subscribe(self, device_ids: Collection[str], fleet_id: str) -> Subscription[T]:
        subscription: Subscription[T] = Subscription(device_ids, fleet_id, self._maxlen)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription[T]) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
        subscription.close()

    @property
    def subscribers(self) -> list[Subscription[T]]:
        return list(self._subscribers)

    def publish(self, items: list[T], key: Callable[[T], tuple[str, str]]) -> None:
        """Offer ``items`` to every subscriber whose filter takes them; ``key`` gives an item's
        (device_id, fleet_id)."""
        for subscription in self._subscribers:
            if subscription.device_ids is None and subscription.fleet_id is None:
                for item in items:
                    subscription.push(item)
                continue
            for item in items:
                device_id, fleet_id = key(item)
                if subscription.wants(device_id, fleet_id):
                    subscription.push(item)

    def close(self) -> None:
        for subscription in self._subscribers:
            subscription.close()
        self._subscribers.clear()
