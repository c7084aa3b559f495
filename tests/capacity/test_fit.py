"""Fitting the take-all batcher's line, and recovering known parameters through the model."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest

from services.runtime.metrics import BATCH_SPREAD_BUCKETS
from simulator.capacity.calibrate import lognormal_cv
from simulator.capacity.fit import (
    OpenRun,
    batch_cv_exponent,
    batch_level_se,
    batch_spread,
    capacity_per_s,
    exponential_wake_ms,
    fit_batching,
    fit_line,
    fit_loop_contention,
    model_open_p95,
    simulate_closed,
    simulate_open,
    within_pass_cv,
)
from simulator.capacity.measure import DurationCounts
from simulator.platform import Batching, RpcCalibration, ServiceCalibration


def test_fit_line_recovers_a_noisy_line() -> None:
    rng = np.random.default_rng(3)
    x = np.repeat([1, 2, 4, 8, 16, 32], 20).astype(float)
    y = 2.5 + 0.75 * x + rng.normal(0, 0.2, x.size)
    line = fit_line(x, y)
    assert line.intercept == pytest.approx(2.5, abs=0.1)
    assert line.slope == pytest.approx(0.75, abs=0.01)
    assert line.r2 > 0.99


def test_fit_line_needs_two_distinct_x() -> None:
    with pytest.raises(ValueError, match="two distinct"):
        fit_line([4, 4, 4], [1, 2, 3])


def test_fit_batching_separates_overhead_batch_and_item_cost() -> None:
    concurrencies = [1, 2, 4, 8, 16, 32]
    overhead, per_batch, per_item = 0.4, 1.5, 0.6
    latencies = [overhead + per_batch + per_item * c for c in concurrencies]
    fit = fit_batching(concurrencies, latencies, overhead)
    assert fit.per_batch_ms == pytest.approx(per_batch)
    assert fit.per_item_ms == pytest.approx(per_item)
    assert fit.overhead_ms == pytest.approx(overhead)


def test_fit_batching_folds_a_negative_fixed_cost_into_the_overhead() -> None:
    # Intercept 1.0 below an echo overhead of 1.5: the batch has no fixed cost left and the
    # overhead shrinks to the intercept, so light-load latency is still the intercept + b.
    fit = fit_batching([1, 2, 4, 8], [1.0 + 2.0 * c for c in (1, 2, 4, 8)], 1.5)
    assert fit.per_batch_ms == 0.0
    assert fit.overhead_ms == pytest.approx(1.0)
    assert fit.per_item_ms == pytest.approx(2.0)


def _service(a: float, b: float, overhead: float, cv: float = 0.0) -> ServiceCalibration:
    return ServiceCalibration(
        workers=1,
        rpcs={
            "call": RpcCalibration(
                "deterministic" if cv == 0 else "lognormal", a, cv, b, overhead_ms=overhead
            )
        },
        batching=Batching(max_batch=64, max_wait_ms=0.0, variability="averaged"),
    )


def test_closed_loop_ladder_of_the_model_gives_back_its_parameters() -> None:
    """What calibrate does to a real service, done to the model: run the closed-loop ladder,
    fit the line, get a, b and the overhead back."""
    truth = _service(a=2.0, b=0.5, overhead=0.8, cv=0.2)
    ladder = [1, 2, 4, 8, 16, 32]
    means = [
        simulate_closed(
            truth, "call", concurrency=c, duration_s=20.0, warmup_s=1.0, seed=c
        ).summary()["mean_ms"]
        for c in ladder
    ]
    fit = fit_batching(ladder, means, 0.8)
    assert fit.per_item_ms == pytest.approx(0.5, rel=0.1)
    assert fit.per_batch_ms == pytest.approx(2.0, rel=0.15)


def test_open_loop_model_saturates_at_its_capacity_and_drops_past_the_cap() -> None:
    service = _service(a=2.0, b=1.0, overhead=0.0)
    capacity = capacity_per_s(service, "call")
    assert capacity == pytest.approx(64 * 1000 / (2.0 + 64.0))
    light = simulate_open(
        service, "call", rate=100, duration_s=10, warmup_s=1, seed=1, max_in_flight=256
    )
    assert light.drops == 0
    assert light.throughput == pytest.approx(100, rel=0.1)
    heavy = simulate_open(
        service, "call", rate=2 * capacity, duration_s=10, warmup_s=1, seed=1, max_in_flight=64
    )
    assert heavy.throughput == pytest.approx(capacity, rel=0.05)
    assert heavy.drops > 0.3 * heavy.offered


def test_lognormal_cv_from_quantiles_ignores_rare_stalls() -> None:
    rng = np.random.default_rng(0)
    sigma = 0.4
    values = rng.lognormal(0.0, sigma, 20_000)
    expected = float(np.sqrt(np.expm1(sigma**2)))
    assert lognormal_cv(values) == pytest.approx(expected, rel=0.05)
    stalled = np.concatenate([values, np.full(50, 500.0)])
    assert lognormal_cv(stalled) == pytest.approx(expected, rel=0.1)


def test_the_event_loop_share_lowers_the_capacity_and_the_model_saturates_there() -> None:
    """T(64) = 66 ms: 970/s without the loop's share. With 0.25 ms per call the batcher runs
    at 1 - x·0.25 ms of its speed at throughput x: x = 970 / (1 + 970·0.00025) = 779/s."""
    plain = _service(a=2.0, b=1.0, overhead=0.0)
    assert plain.batching is not None
    service = replace(plain, batching=replace(plain.batching, loop_ms=0.25))
    c0 = 64 * 1000 / 66.0
    capacity = capacity_per_s(service, "call")
    assert capacity == pytest.approx(c0 / (1 + c0 * 0.00025))
    heavy = simulate_open(
        service, "call", rate=2 * c0, duration_s=10, warmup_s=1, seed=1, max_in_flight=64
    )
    assert heavy.throughput == pytest.approx(capacity, rel=0.08)
    assert heavy.throughput < 0.9 * c0


@pytest.mark.parametrize("spread_ms", [0.3, 2.0])
def test_exponential_wake_is_recovered_from_medians_where_a_median_shift_is_not(
    spread_ms: float,
) -> None:
    """Lone calls of 5 ms with a narrow (0.3 ms, like intent's) or wide spread, and the same
    calls plus an exponential wake-up of mean 1.5 ms: the estimate finds 1.5 ms either way,
    while the plain difference of medians reads it low when the spread is narrow."""
    rng = np.random.default_rng(11)
    without = 5.0 + spread_ms * rng.standard_normal(40_000)
    woken = 5.0 + spread_ms * rng.standard_normal(40_000) + rng.exponential(1.5, 40_000)
    assert exponential_wake_ms(without, woken.tolist()) == pytest.approx(1.5, rel=0.04)
    shift = float(np.median(woken) - np.median(without))
    if spread_ms < 1:
        assert shift < 0.8 * 1.5
    # No difference in medians, no wake-up.
    assert exponential_wake_ms(without, without.tolist()) == 0.0


def test_the_model_counts_its_batches_like_the_service_does() -> None:
    """``batch_size`` / ``batch_ms`` of a model run: every call in some batch, batches of
    about one at light load and larger near capacity, each at least the lone batch time."""
    service = ServiceCalibration(
        workers=1,
        rpcs={"R": RpcCalibration(mean_ms=2.0, cv=0.0, per_item_ms=1.0)},
        batching=Batching(max_batch=32, max_wait_ms=0.0),
    )
    light = simulate_open(
        service, "R", rate=20, duration_s=20, warmup_s=0.5, seed=1, max_in_flight=256
    )
    busy = simulate_open(
        service, "R", rate=600, duration_s=20, warmup_s=0.5, seed=1, max_in_flight=256
    )
    assert light.batches is not None and busy.batches is not None
    # The counts cover the whole run (warm-up too), as a scrape before and after a job does.
    assert light.batches.items >= light.completed
    low, high = light.summary(), busy.summary()
    assert 1.0 <= low["batch_size"] < 1.1
    assert high["batch_size"] > 2.0
    assert low["batch_ms"] >= 3.0 - 1e-9 and high["batch_ms"] > low["batch_ms"]


def test_the_served_batch_table_takes_the_services_own_batches() -> None:
    from simulator.capacity.calibrate import served_batch_table

    rows = [
        {"concurrency": 1, "batch_size": 1.0, "batch_ms": 3.0},
        {"concurrency": 2, "batch_size": 1.02, "batch_ms": 3.4},  # the same size: one point
        {"concurrency": 4, "batch_size": 1.97, "batch_ms": 5.1},
        {"concurrency": 8, "batch_size": 3.9, "batch_ms": 4.9},  # a dip: noise
        {"concurrency": 16, "batch_size": 7.6, "batch_ms": 13.8},
        {"concurrency": 64, "batch_size": 40.0, "batch_ms": 60.0},  # past max_batch
    ]
    assert served_batch_table(rows, max_batch=32) == (
        (1.0, 3.0),
        (1.97, 5.1),
        (3.9, 5.1),
        (7.6, 13.8),
    )
    # A level without the service's numbers (no metrics endpoint): no table, the ladder's.
    assert served_batch_table([*rows, {"concurrency": 32}], max_batch=32) == ()
    assert served_batch_table(rows[:2], max_batch=32) == ()


def test_the_batchers_wake_up_is_the_light_batches_excess_over_idle_share() -> None:
    from simulator.capacity.calibrate import batcher_wake_ms

    served = ((1.0, 2.0), (2.0, 4.0), (4.0, 8.0))
    # Light batches of 1.0 taking 3 ms at 50/s: the batcher is busy 15 % of the time, so 85 %
    # of them start from idle and pay the wake-up: 1 ms / 0.85.
    light = {"batch_size": 1.0, "batch_ms": 3.0}
    assert batcher_wake_ms(light, served, 50.0) == pytest.approx(1.0 / 0.85)
    # Batches a little over one are measured against T at their size (interpolated).
    light = {"batch_size": 1.5, "batch_ms": 3.0}
    assert batcher_wake_ms(light, served, 50.0) == 0.0
    assert batcher_wake_ms({"batch_size": 1.0, "batch_ms": 1.5}, served, 50.0) == 0.0


def test_open_load_batches_lose_the_wake_ups_the_model_adds() -> None:
    from simulator.capacity.calibrate import open_batch_points

    rows = [
        # 100 batches/s of 2 taking 5 ms: busy 50 %, so half of them paid the 1 ms wake-up.
        {"throughput": 200.0, "batch_size": 2.0, "batch_ms": 5.0},
        # Busy past 90 %: counted as 90 %.
        {"throughput": 500.0, "batch_size": 4.0, "batch_ms": 8.0},
    ]
    assert open_batch_points(rows, wake_ms=1.0) == [
        pytest.approx((2.0, 4.5)),
        pytest.approx((4.0, 7.9)),
    ]
    # A run without the service's numbers (no metrics endpoint, or nothing served): none.
    assert open_batch_points([*rows, {"throughput": 100.0}], wake_ms=1.0) == []
    assert open_batch_points([{**rows[0], "throughput": 0.0}], wake_ms=1.0) == []


def test_open_load_points_replace_the_ladders_in_their_range_and_scale_above_it() -> None:
    from simulator.capacity.calibrate import with_open_load

    ladder = ((1.0, 2.0), (2.0, 4.0), (4.0, 7.0), (8.0, 12.0), (16.0, 20.0))
    # Open-loop batches of 3 and 6; the ladder's T(6) is 9.5 ms, the open one 10.45: 1.1.
    table = with_open_load(ladder, [(3.0, 6.0), (6.0, 10.45)], max_batch=32)
    assert table == (
        (1.0, 2.0),
        (2.0, 4.0),
        (3.0, 6.0),
        (6.0, 10.45),
        (8.0, pytest.approx(13.2)),
        (16.0, pytest.approx(22.0)),
    )
    # Open batches faster than the ladder's: the points above shrink alike, the table rises.
    table = with_open_load(ladder, [(1.5, 2.5), (3.0, 5.0)], max_batch=32)
    assert table[:3] == ((1.0, 2.0), (1.5, 2.5), (3.0, 5.0))
    assert [n for n, _ in table] == [1.0, 1.5, 3.0, 4.0, 8.0, 16.0]
    assert table[3][1] == pytest.approx(7.0 * 5.0 / 5.5, abs=1e-3)
    assert all(b[1] >= a[1] for a, b in itertools.pairwise(table))


def _binned(durations_s: np.ndarray) -> DurationCounts:
    """Durations as the service's by-size histogram reports them."""
    bounds = BATCH_SPREAD_BUCKETS
    cumulative = tuple(float(np.sum(durations_s <= b)) for b in bounds)
    return DurationCounts(float(durations_s.size), float(durations_s.sum()), bounds, cumulative)


def _lognormal(mean_s: float, cv: float, n: int, rng: np.random.Generator) -> np.ndarray:
    sigma2 = math.log1p(cv * cv)
    return rng.lognormal(math.log(mean_s) - sigma2 / 2, math.sqrt(sigma2), n)


def test_batch_spread_reads_a_lognormals_mean_and_cv_from_its_buckets() -> None:
    rng = np.random.default_rng(4)
    for cv in (0.2, 0.5, 0.8):
        point = batch_spread(_binned(_lognormal(0.006, cv, 20_000, rng)))
        assert point is not None
        assert abs(point.mean_ms - 6.0) < 0.15
        # Buckets 25 % apart: Sheppard's correction keeps a narrow one's cv.
        assert abs(point.cv - cv) < 0.04 * max(cv, 0.5)
    assert batch_spread(_binned(_lognormal(0.006, 0.5, 20, rng))) is None  # too few


def test_the_cv_exponent_is_read_across_size_classes() -> None:
    rng = np.random.default_rng(5)
    lone_ms, exponent = 2.5, 0.35
    by_size = {}
    for label, k in (("1", 1.0), ("2", 1.7), ("4", 3.0), ("9-12", 7.0), ("25-32", 17.0)):
        cv = 0.8 * k**-exponent
        by_size[label] = _binned(_lognormal(lone_ms * k / 1000, cv, 5_000, rng))
    found = batch_cv_exponent(by_size)
    assert found is not None
    assert abs(found.exponent - exponent) < 0.04
    assert abs(found.lone_cv - 0.8) < 0.04  # the line's value at one lone batch's length
    assert [p.label for p in found.points] == ["1", "2", "4", "9-12", "25-32"]
    # Independent noise per lone call's worth (cv / sqrt(k)) reads as 0.5.
    independent = {
        label: _binned(_lognormal(lone_ms * k / 1000, 0.8 / math.sqrt(k), 5_000, rng))
        for label, k in (("1", 1.0), ("3", 2.2), ("8", 5.0))
    }
    found = batch_cv_exponent(independent)
    assert found is not None and abs(found.exponent - 0.5) < 0.05


def test_no_cv_exponent_without_lone_batches_or_enough_classes() -> None:
    rng = np.random.default_rng(6)
    classes = {
        label: _binned(_lognormal(0.0025 * k, 0.5, 1_000, rng))
        for label, k in (("1", 1.0), ("2", 1.7), ("4", 3.0))
    }
    assert batch_cv_exponent({k: v for k, v in classes.items() if k != "1"}) is None
    assert batch_cv_exponent({k: v for k, v in classes.items() if k != "4"}) is None
    # A class under MIN_SPREAD_BATCHES does not count.
    sparse = dict(classes, **{"4": _binned(_lognormal(0.0075, 0.5, 10, rng))})
    assert batch_cv_exponent(sparse) is None


def _pooled(passes: list[DurationCounts]) -> DurationCounts:
    return DurationCounts(
        sum(p.count for p in passes),
        sum(p.sum_s for p in passes),
        passes[0].bounds,
        tuple(float(sum(c)) for c in zip(*(p.cumulative for p in passes), strict=True)),
    )


def test_the_spread_between_passes_is_taken_out_of_a_class_cv() -> None:
    rng = np.random.default_rng(8)
    within = 0.18
    # Sixteen passes, each at a speed of its own (sd 17 % on the log scale, as intent's lone
    # batch in run 56), 150 batches each.
    speeds = np.exp(rng.normal(0.0, 0.17, 16))
    passes = [_binned(_lognormal(0.004 * s, within, 150, rng)) for s in speeds]
    point = batch_spread(_pooled(passes), "1")
    assert point is not None and point.cv > within + 0.05  # pooled, the speeds are in it
    assert within_pass_cv(point, passes).cv == pytest.approx(within, abs=0.03)
    # Passes at one speed: nothing to take out beyond the noise of their means.
    same = [_binned(_lognormal(0.004, within, 150, rng)) for _ in range(16)]
    point = batch_spread(_pooled(same), "1")
    assert point is not None
    assert within_pass_cv(point, same).cv == pytest.approx(point.cv, abs=0.01)
    # One pass, or passes without the class: as pooled.
    assert within_pass_cv(point, same[:1]) == point
    assert within_pass_cv(point, [DurationCounts(), same[0]]) == point


def test_the_cv_exponent_reads_each_class_within_the_passes() -> None:
    rng = np.random.default_rng(9)
    speeds = np.exp(rng.normal(0.0, 0.2, 12))
    classes = (("1", 1.0), ("2", 1.7), ("4", 3.0), ("9-12", 7.0))
    passes = [
        {
            label: _binned(_lognormal(0.0025 * k * s, 0.3 * k**-0.35, 400, rng))
            for label, k in classes
        }
        for s in speeds
    ]
    by_size = {label: _pooled([p[label] for p in passes]) for label, _ in classes}
    pooled = batch_cv_exponent(by_size)
    found = batch_cv_exponent(by_size, passes)
    assert pooled is not None and found is not None
    assert found.lone_cv == pytest.approx(0.3, abs=0.04)
    assert pooled.lone_cv > found.lone_cv + 0.04
    assert found.exponent == pytest.approx(0.35, abs=0.08)


def test_the_batch_tables_level_is_known_to_the_spread_of_the_passes_levels() -> None:
    pooled = RpcCalibration(batch_ms=((1.0, 4.0), (2.0, 7.0), (8.0, 30.0)))
    # Each pass's table a scaled copy of the pooled one (its own machine speed), with the
    # sizes of its own: the level is read at the pooled table's sizes.
    factors = [0.9, 1.0, 1.1, 1.2]
    passes = [
        RpcCalibration(batch_ms=((1.0, 4.0 * f), (3.0, 10.0 * f), (8.0, 30.0 * f))) for f in factors
    ]
    expected = float(np.std(np.log(factors), ddof=1)) / 2.0
    # T(2) of a pass interpolates between its own 1 and 3: 7 * f exactly.
    assert batch_level_se(pooled, passes) == pytest.approx(expected, rel=1e-6)
    # Passes at one speed: the level is known exactly.
    same = [RpcCalibration(batch_ms=pooled.batch_ms)] * 4
    assert batch_level_se(pooled, same) == pytest.approx(0.0)
    # Too few passes with a table, or no pooled table: unknown.
    assert batch_level_se(pooled, [*passes[:2], RpcCalibration()]) is None
    assert batch_level_se(RpcCalibration(), passes) is None


def _contended(contention: float) -> ServiceCalibration:
    """T(n) = 2 + 1·n ms (cv 0.3), a 1 ms event loop per call in queue mode."""
    plain = _service(a=2.0, b=1.0, overhead=2.0, cv=0.3)
    assert plain.batching is not None
    return replace(
        plain,
        batching=replace(plain.batching, loop_ms=1.0, loop="queue", loop_contention=contention),
    )


def _measured_runs(truth: ServiceCalibration) -> list[OpenRun]:
    """Two short open-loop runs of four passes each, as calibrate takes them, "measured" on
    ``truth`` with arrivals the fit does not see."""
    runs = []
    for rate in (300.0, 500.0):
        shape = OpenRun(
            rates=(rate,) * 4, seeds=(0, 2, 4, 6), duration_s=1.0, warmup_s=0.5, pass_p95_ms=()
        )
        # Each "pass" measured once, on arrivals the fit does not see.
        measured = tuple(
            model_open_p95(truth, "call", replace(shape, rates=(rate,), seeds=(seed,)))
            for seed in (101, 103, 105, 107)
        )
        runs.append(replace(shape, pass_p95_ms=measured))
    return runs


def test_the_loops_contention_is_recovered_from_short_open_runs_p95() -> None:
    """What calibrate does with its open-loop runs, done to the model: the p95 of short jobs
    from a service whose loop passes take twice as long during a batch gives back a
    contention near 1, and one without gives back one near 0."""
    grid = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
    fit = fit_loop_contention(
        _contended(0.0), "call", _measured_runs(_contended(1.0)), grid, replications=4
    )
    assert 0.5 <= fit.contention <= 1.5
    # The model's p95 at the busier run rises with the contention: the fit has a slope to
    # read.
    busy = [p95s[1] for _, p95s, _ in fit.candidates]
    assert busy[-1] > 1.2 * busy[0]
    calm = fit_loop_contention(
        _contended(1.0), "call", _measured_runs(_contended(0.0)), grid, replications=4
    )
    assert calm.contention <= 0.5


def test_the_contention_fit_judges_the_median_of_the_passes_p95() -> None:
    """Both sides of the fit take validate's statistic: the median over the passes of each
    pass's p95, so one disturbed pass (run 53's 0.6 run: a pooled 195.5 ms) does not decide
    it. The model's side is that median per set of arrivals, averaged over the sets."""
    run = OpenRun(
        rates=(300.0, 300.0, 500.0),
        seeds=(1, 3, 5),
        duration_s=0.5,
        warmup_s=0.25,
        pass_p95_ms=(10.0, 12.0, 300.0),
    )
    assert run.p95_ms == 12.0
    # A pass with no completed call has no p95 and does not count.
    assert replace(run, pass_p95_ms=(10.0, math.nan, 12.0)).p95_ms == 11.0
    assert math.isnan(replace(run, pass_p95_ms=(math.nan,)).p95_ms)
    service = _contended(1.0)
    one = [
        model_open_p95(service, "call", replace(run, rates=(r,), seeds=(s + 1000 * k,)))
        for k in range(2)
        for r, s in zip(run.rates, run.seeds, strict=True)
    ]
    medians = [float(np.median(one[:3])), float(np.median(one[3:]))]
    assert model_open_p95(service, "call", run, replications=2) == pytest.approx(
        float(np.mean(medians))
    )
