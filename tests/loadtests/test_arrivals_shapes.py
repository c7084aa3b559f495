"""Arrival schedules and load shapes: seeded, with the rates the shapes promise."""

from __future__ import annotations

import math
import random

import pytest

from loadtests.arrivals import arrival_times, derive_seed
from loadtests.options import LoadTestOptions
from loadtests.shapes import (
    ClosedLoopShape,
    OpenLoopShape,
    Spike,
    build_shape,
    constant_rate,
    rate_steps,
    spike_shape,
)
from services.runtime.settings import SettingsError


def test_derive_seed_is_stable_and_separates_streams() -> None:
    assert derive_seed(7, "journey", "lane0.0/3") == derive_seed(7, "journey", "lane0.0/3")
    seeds = {derive_seed(7, "journey", f"lane0.0/{i}") for i in range(1000)}
    assert len(seeds) == 1000
    assert derive_seed(7, "a") != derive_seed(8, "a")


def schedule(seed: int, shape: OpenLoopShape, max_arrivals: int | None = None) -> list[float]:
    return list(
        arrival_times(
            shape.rate_at,
            shape.peak_rate,
            shape.duration_s,
            random.Random(seed),
            max_arrivals=max_arrivals,
        )
    )


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    shape = constant_rate(50.0, 20.0)
    assert schedule(1, shape) == schedule(1, shape)
    assert schedule(1, shape) != schedule(2, shape)


def test_constant_rate_count_and_order() -> None:
    shape = constant_rate(100.0, 100.0)
    times = schedule(3, shape)
    # Poisson: mean 10,000, sd 100; 5 sd either side.
    assert abs(len(times) - 10_000) < 500
    assert times == sorted(times)
    assert times[0] >= 0.0 and times[-1] < 100.0


def test_max_arrivals_bounds_the_schedule() -> None:
    assert len(schedule(3, constant_rate(100.0, 100.0), max_arrivals=25)) == 25


def test_steps_climb() -> None:
    shape = rate_steps(80.0, 4, 40.0)
    assert [shape.rate_at(t) for t in (0.0, 9.9, 10.0, 25.0, 39.9)] == [20, 20, 40, 60, 80]
    times = schedule(5, rate_steps(80.0, 4, 400.0))
    per_stage = [sum(1 for t in times if 100 * k <= t < 100 * (k + 1)) for k in range(4)]
    assert per_stage == sorted(per_stage)
    assert abs(per_stage[3] - 8000) < 500


def test_spike_multiplies_the_base_inside_its_window_only() -> None:
    shape = spike_shape(10.0, 100.0, Spike(start_frac=0.4, length_frac=0.2, multiplier=5.0))
    assert shape.rate_at(10.0) == 10.0
    assert shape.rate_at(50.0) == 50.0
    assert shape.rate_at(70.0) == 10.0
    assert shape.peak_rate == 50.0
    times = schedule(11, shape)
    inside = sum(1 for t in times if 40 <= t < 60)
    before = sum(1 for t in times if 0 <= t < 20)
    assert inside > 3 * before


def test_daily_shape_follows_the_simulator_curve() -> None:
    from simulator.behaviour import DailyCurve

    shape = build_shape(LoadTestOptions(shape="daily", rate=100.0, duration_s=240.0))
    curve = DailyCurve()
    # 240 s stand for 24 h: 10 s per hour. Peak of the day at --rate.
    assert max(shape.rate_at(t) for t in range(240)) == pytest.approx(100.0, rel=0.02)
    night, evening = shape.rate_at(45.0), shape.rate_at(205.0)  # 04:30 and 20:30
    assert evening > 5 * night
    assert night == pytest.approx(100.0 * float(curve.multiplier(4.5 * 3600)) / curve.peak)


def test_daily_and_spike_shapes_take_the_scenarios_curve() -> None:
    from simulator.scenario import load_scenario

    curve = load_scenario("black-friday").daily_curve
    daily = build_shape(
        LoadTestOptions(shape="daily", rate=50.0, duration_s=24.0, scenario="black-friday")
    )
    # One simulated hour per second; the busiest hour (20:00) gets the peak rate.
    assert daily.rate_at(20.5) == pytest.approx(50.0, rel=0.01)
    assert daily.rate_at(3.5) == pytest.approx(50.0 * curve[3] / max(curve), rel=0.01)
    spike = build_shape(
        LoadTestOptions(shape="spike", rate=10.0, duration_s=100.0, scenario="black-friday")
    )
    ordered = sorted(curve)
    median = (ordered[11] + ordered[12]) / 2
    assert spike.peak_rate == pytest.approx(10.0 * max(curve) / median)
    assert spike.rate_at(5.0) == 10.0 and spike.rate_at(50.0) == spike.peak_rate


def test_closed_shape() -> None:
    shape = build_shape(LoadTestOptions(shape="closed", users=7, duration_s=5.0))
    assert isinstance(shape, ClosedLoopShape) and shape.users == 7


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        (LoadTestOptions(shape="wave"), "--shape"),
        (LoadTestOptions(shape="constant", rate=0.0), "--rate"),
        (LoadTestOptions(shape="constant", rate=math.inf), "--rate"),
        (LoadTestOptions(shape="steps", steps=0), "--steps"),
        (LoadTestOptions(shape="closed", users=0), "--users"),
        (LoadTestOptions(shape="constant", duration_s=0.0), "--duration"),
        (LoadTestOptions(shape="daily", scenario="no-such-scenario"), "--scenario"),
    ],
)
def test_bad_shape_options_name_the_option(options: LoadTestOptions, flag: str) -> None:
    with pytest.raises(SettingsError, match=f"^{flag}"):
        build_shape(options)
