"""The simulator's demand curves for the ``daily`` and ``spike`` shapes (one behaviour model:
the load test replays the curves the simulator plans with, it never keeps copies)."""

from __future__ import annotations

from collections.abc import Callable

from loadtests.shapes import Spike
from services.runtime.settings import SettingsError


def scenario_daily_curve(scenario: str) -> tuple[Callable[[float], float], float]:
    """The rate multiplier over the day (seconds since midnight) and its peak."""
    from simulator.behaviour import DailyCurve

    if scenario:
        raise SettingsError(f"--scenario: unknown scenario {scenario!r}")
    curve = DailyCurve()
    return (lambda t: float(curve.multiplier(t))), curve.peak


def scenario_spike(scenario: str) -> Spike:
    """The spike of a scenario."""
    raise SettingsError(f"--scenario: no simulator scenario with a spike named {scenario!r}")
