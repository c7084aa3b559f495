"""The verdict logic of validate: the knee, which rates are judged, the bounds; and pooling."""

from __future__ import annotations

import pytest

from simulator.capacity.measure import LoadResult, merge_results, poisson_arrivals
from simulator.capacity.validate import evaluate


def _row(rate: float, m_tp: float, p_tp: float, m_p95: float, p_p95: float) -> dict[str, float]:
    return {
        "rate": rate,
        "m_throughput": m_tp,
        "p_throughput": p_tp,
        "m_p95_ms": m_p95,
        "p_p95_ms": p_p95,
    }


def test_knee_is_the_highest_achieved_throughput_and_only_rates_below_it_are_judged() -> None:
    rows = [
        _row(20, 20, 20, 10.0, 11.0),
        _row(60, 60, 60, 20.0, 18.0),
        _row(90, 88, 90, 80.0, 300.0),  # above 0.8 x knee: shown, not judged
        _row(120, 100, 95, 900.0, 950.0),
        _row(150, 97, 96, 1000.0, 990.0),
    ]
    verdict = evaluate(rows, p95_tolerance=0.15, knee_tolerance=0.2, below_knee=0.8)
    assert verdict["measured_knee_per_s"] == 100
    assert verdict["predicted_knee_per_s"] == 96
    assert verdict["knee_ok"] and verdict["p95_ok"] and verdict["passed"]
    assert [r["judged"] for r in rows] == [True, True, False, False, False]
    assert rows[0]["p95_error"] == pytest.approx(0.1)


def test_a_p95_or_knee_off_the_bound_fails() -> None:
    rows = [_row(20, 20, 20, 10.0, 12.0), _row(100, 100, 100, 50.0, 50.0)]
    assert not evaluate(rows, p95_tolerance=0.15, knee_tolerance=0.2, below_knee=0.8)["passed"]
    rows = [_row(20, 20, 20, 10.0, 10.0), _row(100, 100, 70, 50.0, 50.0)]
    verdict = evaluate(rows, p95_tolerance=0.15, knee_tolerance=0.2, below_knee=0.8)
    assert verdict["p95_ok"] and not verdict["knee_ok"] and not verdict["passed"]


def test_merging_passes_pools_latencies_and_weights_throughput_by_window() -> None:
    a = LoadResult("open", 50, 100, 98, 1, 1, 2.0, 49.0, [1.0, 2.0])
    b = LoadResult("open", 50, 150, 150, 0, 0, 3.0, 50.0, [3.0])
    merged = merge_results([a, b])
    assert merged.window_s == 5.0
    assert merged.throughput == pytest.approx((49 * 2 + 50 * 3) / 5)
    assert merged.latencies_ms == [1.0, 2.0, 3.0]
    assert (merged.offered, merged.errors, merged.drops) == (250, 1, 1)


def test_poisson_arrivals_are_seeded_and_have_the_rate() -> None:
    first = poisson_arrivals(200.0, 50.0, seed=4)
    assert (first == poisson_arrivals(200.0, 50.0, seed=4)).all()
    assert len(first) == pytest.approx(200 * 50, rel=0.05)
    assert first[-1] < 50.0
