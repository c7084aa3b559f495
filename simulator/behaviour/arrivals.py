"""Shopper arrivals: a non-homogeneous Poisson process whose rate follows a daily curve."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

DAY_S = 86_400.0

#: Relative shopper traffic per hour of the day (00:00..23:00) of a European web shop: a night
#: trough, a lunch peak and the evening peak. Normalised by ``DailyCurve`` to mean 1.
DEFAULT_HOURLY_WEIGHTS: tuple[float, ...] = (
    0.35, 0.22, 0.15, 0.12, 0.12, 0.18, 0.35, 0.65, 0.90, 1.05, 1.15, 1.25,
    1.40, 1.35, 1.20, 1.15, 1.20, 1.35, 1.60, 1.85, 2.00, 1.80, 1.25, 0.70,
)  # fmt: skip


@dataclass(frozen=True)
class DailyCurve:
    """A rate multiplier over the day with mean 1: piecewise linear between the middles of the
    hours, wrapping around midnight."""

    hourly_weights: tuple[float, ...] = DEFAULT_HOURLY_WEIGHTS

    def __post_init__(self) -> None:
        if len(self.hourly_weights) != 24:
            raise ValueError(f"hourly_weights: need 24 values, got {len(self.hourly_weights)}")
        if any(w < 0 or not math.isfinite(w) for w in self.hourly_weights):
            raise ValueError("hourly_weights: every value must be finite and >= 0")
        if sum(self.hourly_weights) <= 0:
            raise ValueError("hourly_weights: at least one value must be > 0")

    @property
    def _normalised(self) -> np.ndarray:
        weights = np.asarray(self.hourly_weights, dtype=np.float64)
        return weights / weights.mean()

    def multiplier(self, t_s: float | np.ndarray) -> np.ndarray:
        """Rate multiplier at time(s) ``t_s`` seconds since midnight (any day)."""
        weights = self._normalised
        hours = (np.asarray(t_s, dtype=np.float64) % DAY_S) / 3600.0 - 0.5
        lower = np.floor(hours).astype(np.int64)
        frac = hours - lower
        return weights[lower % 24] * (1.0 - frac) + weights[(lower + 1) % 24] * frac

    @property
    def peak(self) -> float:
        """The largest multiplier (the bound thinning needs)."""
        return float(self._normalised.max())


@dataclass(frozen=True)
class ArrivalProcess:
    """Shoppers per day spread over the day by ``curve``: rate(t) = shoppers_per_day / 86400 *
    curve.multiplier(t). Sampled by thinning (Lewis and Shedler), exactly."""

    shoppers_per_day: float
    curve: DailyCurve = field(default_factory=DailyCurve)

    def rate(self, t_s: float | np.ndarray) -> np.ndarray:
        """Arrivals per second at ``t_s``."""
        return self.shoppers_per_day / DAY_S * self.curve.multiplier(t_s)

    def expected_count(self, start_s: float, end_s: float, steps: int = 2048) -> float:
        """Expected arrivals in [start_s, end_s) (numerical integral of the rate)."""
        grid = np.linspace(start_s, end_s, steps + 1)
        return float(np.trapezoid(self.rate(grid), grid))

    def times(self, rng: np.random.Generator, start_s: float, end_s: float) -> np.ndarray:
        """All arrival times in [start_s, end_s), sorted (vectorised thinning)."""
        peak_rate = self.shoppers_per_day / DAY_S * self.curve.peak
        if peak_rate <= 0 or end_s <= start_s:
            return np.empty(0)
        count = rng.poisson(peak_rate * (end_s - start_s))
        candidates = np.sort(rng.uniform(start_s, end_s, count))
        keep = rng.random(count) * peak_rate < self.rate(candidates)
        return candidates[keep]

    def next_arrival(self, rng: np.random.Generator, now_s: float) -> float:
        """The first arrival after ``now_s`` (one step of thinning; for incremental drivers such
        as a Locust load shape)."""
        peak_rate = self.shoppers_per_day / DAY_S * self.curve.peak
        if peak_rate <= 0:
            return math.inf
        t = now_s
        while True:
            t += rng.exponential(1.0 / peak_rate)
            if rng.random() * peak_rate < float(self.rate(t)):
                return t


def hourly_counts(times_s: Sequence[float] | np.ndarray) -> np.ndarray:
    """Arrivals per hour of the day (24 bins) of a set of times."""
    hours = (np.asarray(times_s, dtype=np.float64) % DAY_S) // 3600
    return np.bincount(hours.astype(np.int64), minlength=24)[:24]
