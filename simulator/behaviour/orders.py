"""Orders a checkout produces: demand, value, delivery address and a delivery time window."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simulator.behaviour.catalogue import Item
from simulator.behaviour.geo import Point


@dataclass(frozen=True)
class OrderConfig:
    """Delivery slots and what an order needs."""

    #: Earliest slot start after the order is placed, seconds.
    lead_time_s: float = 2 * 3600.0
    #: Slot length, seconds.
    slot_length_s: float = 2 * 3600.0
    #: First slot of a day starts at this second after midnight, the last one ends at
    #: ``last_slot_end_s``.
    first_slot_start_s: float = 8 * 3600.0
    last_slot_end_s: float = 22 * 3600.0
    #: Time spent at the door, seconds.
    service_time_s: float = 120.0
    #: Share of orders with chilled goods (delivered in a cold-chain box).
    cold_chain_share: float = 0.2


@dataclass(frozen=True)
class OrderSpec:
    """One delivery order: where, how much, and when it must be served (simulation seconds)."""

    order_id: str
    shopper_id: str
    location: Point
    #: Demand units (one per item unit).
    demand: int
    value_minor: int
    item_ids: tuple[str, ...]
    placed_at_s: float
    window_start_s: float
    window_end_s: float
    service_time_s: float
    cold_chain: bool


def delivery_window(config: OrderConfig, placed_at_s: float) -> tuple[float, float]:
    """The first slot that starts at least ``lead_time_s`` after ``placed_at_s`` (rolling over
    to the next day after the last slot)."""
    earliest = placed_at_s + config.lead_time_s
    day = math.floor(earliest / 86_400.0)
    start_of_day = day * 86_400.0
    offset = earliest - start_of_day - config.first_slot_start_s
    slot = max(0, math.ceil(offset / config.slot_length_s - 1e-9))
    start = start_of_day + config.first_slot_start_s + slot * config.slot_length_s
    if start + config.slot_length_s > start_of_day + config.last_slot_end_s:
        start = start_of_day + 86_400.0 + config.first_slot_start_s
    return start, start + config.slot_length_s


def make_order(
    rng: np.random.Generator,
    config: OrderConfig,
    order_id: str,
    shopper_id: str,
    location: Point,
    cart: Sequence[tuple[Item, int]],
    placed_at_s: float,
) -> OrderSpec:
    """The order of a checkout of ``cart`` (item, quantity) pairs."""
    start, end = delivery_window(config, placed_at_s)
    return OrderSpec(
        order_id=order_id,
        shopper_id=shopper_id,
        location=location,
        demand=max(1, sum(q for _, q in cart)),
        value_minor=sum(item.price_minor * q for item, q in cart),
        item_ids=tuple(item.item_id for item, _ in cart),
        placed_at_s=placed_at_s,
        window_start_s=start,
        window_end_s=end,
        service_time_s=config.service_time_s,
        cold_chain=bool(rng.random() < config.cold_chain_share),
    )
