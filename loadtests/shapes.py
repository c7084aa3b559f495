"""Load shapes as plain functions of time, shared by every Locust process of a run.

Open-loop shapes give an arrival rate over time (arrivals do not wait for responses);
the closed-loop shape gives a number of users that each wait for their last answer before
the next request, for comparison. ``daily`` and ``spike`` follow the simulator's scenarios, so
a load test replays the day the capacity model planned for, compressed into the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from loadtests.options import LoadTestOptions
from services.runtime.settings import SettingsError

OPEN_SHAPES: tuple[str, ...] = ("constant", "steps", "daily", "spike")
SHAPES: tuple[str, ...] = (*OPEN_SHAPES, "closed")

RateFn = Callable[[float], float]


@dataclass(frozen=True)
class OpenLoopShape:
    """Arrivals per second over ``[0, duration_s)``; never above ``peak_rate``."""

    name: str
    duration_s: float
    rate_at: RateFn
    peak_rate: float

    def expected_arrivals(self, steps: int = 2000) -> float:
        """The integral of the rate over the run (midpoint rule)."""
        width = self.duration_s / steps
        return sum(self.rate_at((i + 0.5) * width) for i in range(steps)) * width


@dataclass(frozen=True)
class ClosedLoopShape:
    """``users`` users, started at ``spawn_rate`` per second, for ``duration_s``."""

    name: str
    duration_s: float
    users: int
    spawn_rate: float


Shape = OpenLoopShape | ClosedLoopShape


def constant_rate(rate: float, duration_s: float) -> OpenLoopShape:
    """The same arrival rate for the whole run."""
    return OpenLoopShape("constant", duration_s, lambda _t: rate, rate)


def rate_steps(rate: float, steps: int, duration_s: float) -> OpenLoopShape:
    """``steps`` equal stages whose rate climbs rate/steps, 2·rate/steps, ..., rate: where
    latency bends shows the capacity."""
    stage_s = duration_s / steps

    def rate_at(t: float) -> float:
        stage = min(int(t // stage_s), steps - 1)
        return rate * (stage + 1) / steps

    return OpenLoopShape("steps", duration_s, rate_at, rate)


def daily_curve(rate: float, duration_s: float, multiplier: RateFn, peak: float) -> OpenLoopShape:
    """A day of traffic compressed into the run: ``multiplier(seconds since midnight)`` scaled
    so that the busiest moment of the day gets ``rate`` arrivals per second."""

    def rate_at(t: float) -> float:
        return rate * multiplier(t / duration_s * 86_400.0) / peak

    return OpenLoopShape("daily", duration_s, rate_at, rate)


@dataclass(frozen=True)
class Spike:
    """A burst: ``multiplier`` times the base rate from ``start_frac`` of the run for
    ``length_frac`` of it, with linear ramps of ``ramp_frac`` on either side."""

    start_frac: float
    length_frac: float
    multiplier: float
    ramp_frac: float = 0.0


def spike_shape(base_rate: float, duration_s: float, spike: Spike) -> OpenLoopShape:
    """The base rate with one spike; ``peak_rate`` is base * multiplier."""
    start = spike.start_frac * duration_s
    end = start + spike.length_frac * duration_s
    ramp = spike.ramp_frac * duration_s

    def rate_at(t: float) -> float:
        if start <= t < end:
            level = 1.0
        elif ramp > 0 and start - ramp <= t < start:
            level = (t - (start - ramp)) / ramp
        elif ramp > 0 and end <= t < end + ramp:
            level = 1.0 - (t - end) / ramp
        else:
            level = 0.0
        return base_rate * (1.0 + (spike.multiplier - 1.0) * level)

    return OpenLoopShape("spike", duration_s, rate_at, base_rate * max(1.0, spike.multiplier))


def build_shape(options: LoadTestOptions) -> Shape:
    """The shape a run's options name; a bad option raises ``SettingsError`` naming it."""
    if options.duration_s <= 0 or not math.isfinite(options.duration_s):
        raise SettingsError(f"--duration: must be positive, got {options.duration_s}")
    if options.shape == "closed":
        if options.users < 1:
            raise SettingsError(f"--users: need at least 1 user, got {options.users}")
        if options.spawn_rate <= 0:
            raise SettingsError(f"--spawn-rate: must be positive, got {options.spawn_rate}")
        return ClosedLoopShape("closed", options.duration_s, options.users, options.spawn_rate)
    if options.shape not in OPEN_SHAPES:
        raise SettingsError(f"--shape: unknown shape {options.shape!r}; known: {', '.join(SHAPES)}")
    if not (options.rate > 0 and math.isfinite(options.rate)):
        raise SettingsError(f"--rate: must be a positive number of arrivals/s, got {options.rate}")
    if options.shape == "constant":
        return constant_rate(options.rate, options.duration_s)
    if options.shape == "steps":
        if options.steps < 1:
            raise SettingsError(f"--steps: need at least 1 step, got {options.steps}")
        return rate_steps(options.rate, options.steps, options.duration_s)
    from loadtests.scenarios import scenario_daily_curve, scenario_spike

    if options.shape == "daily":
        multiplier, peak = scenario_daily_curve(options.scenario)
        return daily_curve(options.rate, options.duration_s, multiplier, peak)
    return spike_shape(options.rate, options.duration_s, scenario_spike(options.scenario))
