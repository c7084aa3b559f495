"""The simulator's scenarios as load: the ``daily`` shape replays a scenario's demand curve,
the ``spike`` shape its peak, and the scenario's world (catalogue, shoppers, sessions, orders,
fleet) is the one the users draw from. One behaviour model: nothing here copies it."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING

from loadtests.shapes import Spike
from services.runtime.settings import SettingsError
from simulator.behaviour import DailyCurve, WorldConfig

if TYPE_CHECKING:
    from simulator.scenario import Scenario

#: Where the spike sits in the run, as fractions of its duration.
SPIKE_START_FRAC = 0.4
SPIKE_LENGTH_FRAC = 0.2
SPIKE_RAMP_FRAC = 0.05


def load(scenario: str) -> Scenario:
    """The parsed simulator scenario; errors name ``--scenario``."""
    from simulator.scenario import ScenarioError, load_scenario

    try:
        return load_scenario(scenario)
    except ScenarioError as exc:
        raise SettingsError(f"--scenario: {exc}") from None


def daily_curve(scenario: str) -> DailyCurve:
    """The scenario's daily curve (the behaviour model's default without a scenario)."""
    if not scenario:
        return DailyCurve()
    return DailyCurve(tuple(load(scenario).daily_curve))


def scenario_daily_curve(scenario: str) -> tuple[Callable[[float], float], float]:
    """The rate multiplier over the day (seconds since midnight) and its peak."""
    curve = daily_curve(scenario)
    return (lambda t: float(curve.multiplier(t))), curve.peak


def scenario_spike(scenario: str) -> Spike:
    """The scenario's peak as a spike: the busiest hour over the median hour of its daily
    curve, placed in the middle of the run."""
    weights = daily_curve(scenario).hourly_weights
    median = statistics.median(weights)
    multiplier = max(weights) / median if median > 0 else 1.0
    return Spike(SPIKE_START_FRAC, SPIKE_LENGTH_FRAC, multiplier, SPIKE_RAMP_FRAC)


def world_config(scenario: str, seed: int, vehicles: int) -> WorldConfig:
    """The behaviour model's config for a run: the scenario's world (or the defaults), with
    the run's seed and fleet size."""
    config = load(scenario).world_config() if scenario else WorldConfig()
    fleet = dataclasses.replace(config.fleet, vehicles=vehicles)
    return dataclasses.replace(config, seed=seed, fleet=fleet)
