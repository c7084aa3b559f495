"""Seeded arrival schedules for open-loop load.

Open loop means arrivals follow a schedule fixed in advance and never wait for responses, so
when the service slows down requests queue up and latency shows it (wrk2's point: closed-loop
users slow down with the service and hide queueing). Arrivals are a Poisson process whose rate
may vary in time, drawn by thinning (Lewis and Shedler) so that a seed fixes the whole schedule.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator


def derive_seed(seed: int, *parts: object) -> int:
    """A 64-bit seed for one stream of randomness, fixed by ``seed`` and the ``parts`` naming
    the stream (workload, lane, arrival index). Streams never share numbers, so adding a user
    or a lane does not shift the draws of the others."""
    text = "/".join([str(seed), *(str(p) for p in parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def arrival_times(
    rate_at: Callable[[float], float],
    peak_rate: float,
    duration_s: float,
    rng: random.Random,
    *,
    max_arrivals: int | None = None,
) -> Iterator[float]:
    """Arrival times (seconds from the start, increasing) of a Poisson process with intensity
    ``rate_at(t)`` (arrivals per second, never above ``peak_rate``) on ``[0, duration_s)``,
    at most ``max_arrivals`` of them."""
    if peak_rate <= 0 or duration_s <= 0:
        return
    t = 0.0
    count = 0
    while max_arrivals is None or count < max_arrivals:
        t += rng.expovariate(peak_rate)
        if t >= duration_s:
            return
        # Thinning: keep a candidate with probability rate(t) / peak.
        if rng.random() * peak_rate < rate_at(t):
            count += 1
            yield t
