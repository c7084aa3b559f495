"""Per-user history and per-item popularity kept as exponentially decayed sums.

Decayed sums can be updated one event at a time and read at any later time: a sum stored at
reference time ``t_ref`` is ``sum_k w_k * exp((t_k - t_ref) / tau)``, and its value at time ``t``
is that times ``exp(-(t - t_ref) / tau)``. Training builds them from the log; serving adds
feedback events to the same structures, so the features the scorer sees at serving time are the
ones it was trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from services.recommendation.data import EVENT_WEIGHTS, PURCHASE

DAY = 86_400.0

#: Time constants (days) of the decayed item popularity: 14 days for the blend's popularity
#: term, 30 days for the cold-start list.
POPULARITY_TAUS: tuple[float, ...] = (14.0, 30.0)
BLEND_POPULARITY_TAU = 14.0


@dataclass
class UserHistory:
    """One user's history: per item, weighted count, last time, decayed input and purchase flag."""

    counts: dict[int, float] = field(default_factory=dict)
    last_time: dict[int, float] = field(default_factory=dict)
    #: Decayed item-item input weight ``sum w * exp((t - t_ref) / tau_input)``.
    input_weight: dict[int, float] = field(default_factory=dict)
    purchased: set[int] = field(default_factory=set)

    def add(self, item: int, when: float, event_type: int, weight_ref: float) -> None:
        """Record one event; ``weight_ref`` is its decayed input weight at the reference time."""
        weight = EVENT_WEIGHTS.get(event_type, 1.0)
        self.counts[item] = self.counts.get(item, 0.0) + weight
        self.last_time[item] = max(self.last_time.get(item, -math.inf), when)
        self.input_weight[item] = self.input_weight.get(item, 0.0) + weight * weight_ref
        if event_type == PURCHASE:
            self.purchased.add(item)


class Popularity:
    """Decayed, event-weighted popularity per item at several time constants."""

    def __init__(self, num_items: int, reference_time: float) -> None:
        self.reference_time = reference_time
        self.sums = np.zeros((len(POPULARITY_TAUS), num_items), dtype=np.float64)

    def add(self, items: np.ndarray, times: np.ndarray, weights: np.ndarray) -> None:
        """Add events (vectorised)."""
        for row, tau in enumerate(POPULARITY_TAUS):
            decay = np.exp((times - self.reference_time) / (tau * DAY))
            np.add.at(self.sums[row], items, weights * decay)

    def at(self, now: float) -> np.ndarray:
        """Decayed popularity sums at ``now``, shape (len(POPULARITY_TAUS), items)."""
        factors = np.exp(-(now - self.reference_time) / (np.asarray(POPULARITY_TAUS) * DAY))
        return self.sums * factors[:, None]

    def blend(self, now: float) -> np.ndarray:
        """The popularity term of the blend at ``now``, scaled to a maximum of 1."""
        values = self.at(now)[POPULARITY_TAUS.index(BLEND_POPULARITY_TAU)]
        top = float(values.max()) if values.size else 0.0
        return (values / top if top > 0 else values).astype(np.float32)

    def recent(self, now: float) -> np.ndarray:
        """The 30-day decayed popularity, the cold-start ranking."""
        return self.at(now)[POPULARITY_TAUS.index(30.0)]
