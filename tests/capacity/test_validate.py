"""The verdict logic of validate: the knee, which rates are judged, the bounds; pooling; and
the order in which a validate that calibrates first measures (with a recording generator)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simulator.capacity import fit, validate
from simulator.capacity.calibrate import OPEN_FRACTIONS
from simulator.capacity.harness import Running
from simulator.capacity.measure import (
    ClosedJob,
    LoadResult,
    OpenJob,
    Workload,
    merge_results,
    poisson_arrivals,
)
from simulator.capacity.validate import evaluate


def _row(rate: float, m_tp: float, p_tp: float, m_p95: float, p_p95: float) -> dict[str, float]:
    """A row whose judged p95s (median of passes) are ``m_p95`` and ``p_p95``; the measured
    pooled p95 is 30 % higher (a disturbed pass), which must not count."""
    return {
        "rate": rate,
        "m_throughput": m_tp,
        "p_throughput": p_tp,
        "m_p95_med_ms": m_p95,
        "p_p95_med_ms": p_p95,
        "m_p95_ms": 1.3 * m_p95,
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
    # The pooled p95s are shown beside the judged ones, not judged.
    assert rows[0]["p95_error_pooled"] == pytest.approx(11.0 / 13.0 - 1.0, abs=1e-3)


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


def test_the_judged_p95_is_the_median_of_the_passes_on_both_sides() -> None:
    from simulator.platform import load_calibration

    service = load_calibration("measured-2core").services["intent"]
    rate = 150.0

    def measured_pass(p95_ms: float, slow_calls: int = 6) -> list[LoadResult]:
        # 100 calls: the slow ones at the pass's p95, the others at 5 ms.
        latencies = [5.0] * (100 - slow_calls) + [p95_ms] * slow_calls
        return [LoadResult("open", rate, 100, 100, 0, 0, 1.0, 100.0, latencies)]

    # Seven passes agree on about 20 ms; in one the machine stalled for half the pass.
    quiet = [measured_pass(p) for p in (19.0, 20.0, 21.0, 20.0, 19.5, 20.5, 20.0)]
    (row,) = validate.predict_rows(
        service,
        [rate],
        validate.Replay(
            "Classify",
            [*quiet, measured_pass(400.0, slow_calls=50)],
            warmup_s=0.2,
            max_in_flight=256,
            seed=3,
            replications=3,
        ),
        log=lambda _m: None,
    )
    assert row["m_p95_med_ms"] == pytest.approx(20.0)
    assert row["m_p95_ms"] > 5 * row["m_p95_med_ms"]  # pooled: the stalled pass's tail
    # The model's side is the same statistic: each replication's median over the passes of
    # the pass's p95, averaged over the replications.
    runs = [
        [
            fit.simulate_open(
                service,
                "Classify",
                rate=rate,
                duration_s=1.0,
                warmup_s=0.2,
                seed=validate.arrival_seed(3, p, 0, replica),
                max_in_flight=256,
                timeout_s=OpenJob.timeout_s,
            )
            for p in range(8)
        ]
        for replica in range(3)
    ]
    expected = np.mean([validate.pass_median_p95(rep) for rep in runs])
    assert row["p_p95_med_ms"] == pytest.approx(expected, rel=1e-3)
    assert row["p_p95_se"] is not None


def test_poisson_arrivals_are_seeded_and_have_the_rate() -> None:
    first = poisson_arrivals(200.0, 50.0, seed=4)
    assert (first == poisson_arrivals(200.0, 50.0, seed=4)).all()
    assert len(first) == pytest.approx(200 * 50, rel=0.05)
    assert first[-1] < 50.0


class _RecordingGenerator:
    """Answers each job with made-up latencies (echo 0.8 ms + 0.2 ms per concurrent call; the
    service a batcher 1 ms slower, 0.5 ms per call), records what ran (service, closed or
    open), and from job ``slow_from`` on is three times slower."""

    def __init__(self, slow_from: int) -> None:
        self.log: list[tuple[str, str]] = []
        #: Measured seconds of each open-loop job, in order.
        self.open_durations: list[float] = []
        self.slow_from = slow_from

    def run(self, jobs: list[Any]) -> list[LoadResult]:
        rng = np.random.default_rng(len(self.log))
        results = []
        for job in jobs:
            service = job.workload.service
            speed = 3.0 if len(self.log) >= self.slow_from else 1.0
            if isinstance(job, ClosedJob):
                self.log.append((service, "closed"))
                own = 0.0 if service == "echo" else 1.0 + 0.3 * job.concurrency
                mean = speed * (0.8 + 0.2 * job.concurrency + own)
                level, throughput = float(job.concurrency), 1000.0 * job.concurrency / mean
            else:
                self.log.append((service, "open"))
                self.open_durations.append(job.duration_s)
                mean, level, throughput = speed * 3.0, job.rate, job.rate
            latencies = list(mean * rng.lognormal(0.0, 0.2, 200) / np.exp(0.02))
            results.append(LoadResult("x", level, 200, 200, 0, 0, 1.0, throughput, latencies))
        return results


def _workloads() -> dict[str, Workload]:
    return {
        "echo": Workload("echo", "Echo", "x"),
        "recommendation": Workload("recommendation", "Recommend", "x"),
    }


def _measure_args(out: Path, passes: int) -> argparse.Namespace:
    """``validate.measure``'s arguments: a second of each, ``passes`` passes."""
    return argparse.Namespace(
        calibration_duration=1.0,
        warmup=0.1,
        workers=1,
        passes=passes,
        duration=1.0,
        max_in_flight=64,
        seed=7,
        out=out,
    )


def test_calibration_passes_alternate_with_validation_passes_and_all_are_fitted(
    tmp_path: Path,
) -> None:
    # Slower from the second calibration pass on (job 17, see the order below).
    generator = _RecordingGenerator(slow_from=17)
    workloads = _workloads()
    args = _measure_args(tmp_path, passes=3)
    checked = {
        "services": ["recommendation"],
        "ladder": [1, 4, 8],
        "rates": [10.0, 20.0],
        "calibration": None,
    }
    calibration, measured, rates, paired = validate.measure(
        args, checked, generator, Running({}, workloads), lambda _m: None
    )
    echo, rec = "echo", "recommendation"
    # Each calibration pass: the two ladders, then echo open-loop at a light rate, the
    # service alone at a light rate and at OPEN_FRACTIONS of its ladder's best, the last
    # past its knee (a share per pass, pooled like the ladder).
    calibration_pass = [(echo, "closed")] * 3 + [(rec, "closed")] * 3 + [(echo, "open")]
    calibration_pass += [(rec, "open")] * (1 + len(OPEN_FRACTIONS))
    validation_pass = [(rec, "open")] * 2
    assert generator.log == [
        # Warm-up, echo back to back, the service's warm-up.
        (echo, "closed"),
        (echo, "closed"),
        (rec, "closed"),
        *calibration_pass,
        (rec, "closed"),  # warm-up before the rates
        *validation_pass,
        *calibration_pass,
        *validation_pass,
        *calibration_pass,
        *validation_pass,
    ]
    assert [len(passes) for passes in measured.values()] == [3]
    assert rates == {rec: [10.0, 20.0]}
    # Per pass: echo's light run a third of --calibration-duration, the service's light run
    # two thirds, its loads a third each; both rates far below the fake service's knee
    # (light load), half of a third of --duration each.
    third = 1.0 / 3
    open_runs = [third, 2 * third, *[third] * len(OPEN_FRACTIONS), third / 2, third / 2]
    assert generator.open_durations == pytest.approx(open_runs * 3)
    # The fit pools every calibration pass: per call 0.3 ms on the fast machine, 0.9 ms on
    # the slow one, so about 0.7 ms for one fast pass and two slow ones (not the first
    # pass's 0.3 ms).
    per_item = calibration.services[rec].rpcs["Recommend"].per_item_ms
    assert per_item == pytest.approx(0.7, rel=0.15)
    assert (tmp_path / "calibration.json").exists()
    raw = json.loads((tmp_path / "calibration.measurements.json").read_text())
    assert len(raw[rec]["fit"]["open_load"]) == len(OPEN_FRACTIONS)
    # Each calibration pass is also fitted alone: the fast first pass (0.3 ms per call),
    # then the slow machine (0.9 ms).
    per_pass = [c.services[rec].rpcs["Recommend"].per_item_ms for c in paired]
    assert per_pass == pytest.approx([0.3, 0.9, 0.9], rel=0.15)
    assert len(json.loads((tmp_path / "calibration-passes.json").read_text())) == 3
    # Each row carries the measured p95 of every pass and its standard error over them.
    replay = validate.Replay("Recommend", measured[rec], warmup_s=0.1, max_in_flight=64, seed=7)
    rows = validate.predict_rows(
        calibration.services[rec],
        rates[rec],
        replay,
        log=lambda _m: None,
        paired=[c.services[rec] for c in paired],
    )
    passes = rows[0]["m_p95_passes"]
    assert len(passes) == 3 and passes[1] > 2 * passes[0]  # the machine slowed down
    expected = np.std(passes, ddof=1) / np.sqrt(3) / np.mean(passes)
    assert rows[0]["m_p95_se"] == pytest.approx(expected, abs=1e-3)
    assert rows[0]["p_p95_ms"] > 0
    # Paired: two of the three passes are predicted from the slow machine's fit, so the
    # median of the paired predictions is above that of the fit of all passes.
    assert rows[0]["p_p95_paired_ms"] > rows[0]["p_p95_med_ms"]
    assert rows[0]["p95_error_paired"] is not None
    # The calibration's band: its batch table one standard error over the passes shorter and
    # longer (one fast pass, two slow: the levels spread widely), on the same arrivals.
    validate.evaluate(rows, p95_tolerance=0.15, knee_tolerance=0.2, below_knee=0.8)
    band = validate.calibration_band(
        calibration.services[rec], [c.services[rec] for c in paired], rows, replay
    )
    assert band is not None and band["batch_level_se"] > 0.1
    judged = [row for row in rows if row["judged"]]
    assert judged
    for row in judged:
        assert row["p95_error_cal_lo"] < row["p95_error"] < row["p95_error_cal_hi"]
    sentence = validate.calibration_sentence({"rows": rows, "calibration_band": band})
    assert f"{band['batch_level_se']:.1%} shorter or longer" in sentence


def test_model_replications_pool_fresh_arrivals_and_steady_the_prediction() -> None:
    # The first replication is the measured arrivals themselves; the others are fresh.
    assert validate.arrival_seed(7, 2, 3, 0) == validate.arrival_seed(7, 2, 3)
    seeds = {
        validate.arrival_seed(7, p, i, r) for p in range(8) for i in range(10) for r in range(10)
    }
    assert len(seeds) == 800
    from simulator.platform import load_calibration

    service = load_calibration("measured-2core").services["intent"]
    # At 70 % of intent's knee one set of two short passes gives a p95 that moves with the
    # arrivals; ten replications pooled move much less from one seed to the next.
    measured = [[LoadResult("open", 280.0, 1, 1, 0, 0, 1.0, 1.0, [20.0])] for _ in range(2)]

    def p95(seed: int, replications: int) -> tuple[float, Any]:
        (row,) = validate.predict_rows(
            service,
            [280.0],
            validate.Replay(
                "Classify",
                measured,
                warmup_s=0.2,
                max_in_flight=256,
                seed=seed,
                replications=replications,
            ),
            log=lambda _m: None,
        )
        return row["p_p95_med_ms"], row["p_p95_se"]

    single = [p95(seed, 1)[0] for seed in range(6)]
    pooled = [p95(seed, 10) for seed in range(6)]
    assert all(se is not None and 0 < se < 0.2 for _, se in pooled)
    assert p95(0, 1)[1] is None  # one replication: no spread to report
    assert np.std([p for p, _ in pooled]) < 0.6 * np.std(single)


def test_the_duration_goes_where_the_p95_spreads_most() -> None:
    # A knee of 400/s: light load gets half of --duration, the top judged rates twice, the
    # rates just under the knee all of it, at and past the knee a quarter.
    rates = [40.0, 119.0, 120.0, 239.0, 240.0, 339.0, 340.0, 399.0, 400.0, 520.0]
    durations = validate.rate_durations(rates, 400.0, 32.0)
    assert durations == [16.0, 16.0, 32.0, 32.0, 64.0, 64.0, 32.0, 32.0, 8.0, 8.0]
    # The auto ladder: 280 s (a flat --duration below the knee spent 248), 128 of them at 0.7
    # and 0.8 of the knee.
    auto = validate.rate_durations([400.0 * f for f in validate.AUTO_FRACTIONS], 400.0, 32.0)
    assert auto == [16.0, 16.0, 32.0, 32.0, 64.0, 64.0, 32.0, 8.0, 8.0, 8.0]


def _judged(p95_passes: list[float], p_p95_se: float) -> dict[str, Any]:
    median = float(np.median(p95_passes))
    return {
        **_row(20, 20, 20, median, median),
        "m_p95_passes": p95_passes,
        "m_p95_se": 0.0,
        "p_p95_se": p_p95_se,
        "judged": True,
    }


def test_a_perfect_models_chance_from_the_models_own_spread_matches_a_hand_computed_case() -> None:
    # Relative standard error 0.05 over 4 replications: one replication's statistic varies by
    # 0.10; with the prediction's own 0.05, log(predicted / measured) ~ N(0, 0.1118^2).
    # P(0.85 <= ratio <= 1.15) = Phi(ln 1.15 / 0.1118) - Phi(ln 0.85 / 0.1118)
    #                          = Phi(1.2501) - Phi(-1.4536) = 0.8944 - 0.0730 = 0.8214.
    rows = [_judged([10.0] * 8, 0.05), _judged([20.0] * 8, 0.05)]
    chance = validate.perfect_model_chance(rows, 0.15, spread="model", replications=4)
    assert chance == pytest.approx(0.8214**2, abs=2e-3)
    # One replication has no spread to read.
    assert validate.perfect_model_chance(rows, 0.15, spread="model", replications=1) is None
    assert validate.perfect_model_chance([], 0.15, spread="model", replications=4) is None


def test_a_perfect_models_chance_falls_as_the_measured_passes_spread() -> None:
    steady = [_judged([10.0] * 8, 0.0)]
    assert validate.perfect_model_chance(steady, 0.15, spread="measured") == 1.0
    # Passes within +-10 % of the median: no resample's median leaves that range.
    some = [_judged([9.0, 11.0] * 4, 0.0)]
    assert validate.perfect_model_chance(some, 0.15, spread="measured") == 1.0
    # Passes at -20 % and +20 %: a resample's median is 8, 10 or 12, and only 10 (four
    # draws of each, C(8, 4) / 2^8 = 70 / 256 = 0.273) is within 15 %.
    wide = [_judged([8.0, 12.0] * 4, 0.0)]
    wide_chance = validate.perfect_model_chance(wide, 0.15, spread="measured")
    assert wide_chance == pytest.approx(70 / 256, abs=0.03)
    # The prediction's own uncertainty moves the ratio too: a perfect model's chance falls.
    unsure = [_judged([9.0, 11.0] * 4, 0.1)]
    unsure_chance = validate.perfect_model_chance(unsure, 0.15, spread="measured")
    assert unsure_chance is not None and 0.5 < unsure_chance < 1.0
    # Bootstrapped with a fixed seed: the same rows, the same answer.
    assert validate.perfect_model_chance(wide, 0.15, spread="measured") == wide_chance
    # Too few passes to read a spread from.
    assert (
        validate.perfect_model_chance([_judged([9.0, 11.0], 0.0)], 0.15, spread="measured") is None
    )
    # Passes of unequal counts cannot be drawn jointly.
    uneven = [_judged([9.0, 11.0] * 4, 0.0), _judged([9.0, 11.0] * 3, 0.0)]
    assert validate.perfect_model_chance(uneven, 0.15, spread="measured") is None


def test_passes_that_slow_every_rate_together_are_drawn_together() -> None:
    # Pass k of every rate ran in the same minutes. Two rates whose slow passes coincide
    # fall inside or outside the bound together, so meeting it at both is as likely as at
    # one; the same spreads with the slow passes apart must both be lucky at once.
    slow_in_odd_passes = [8.0, 12.0] * 4
    slow_in_late_pairs = [8.0, 8.0, 12.0, 12.0] * 2
    one = validate.perfect_model_chance([_judged(slow_in_odd_passes, 0.0)], 0.15, spread="measured")
    together = validate.perfect_model_chance(
        [_judged(slow_in_odd_passes, 0.0), _judged([2 * v for v in slow_in_odd_passes], 0.0)],
        0.15,
        spread="measured",
    )
    apart = validate.perfect_model_chance(
        [_judged(slow_in_odd_passes, 0.0), _judged(slow_in_late_pairs, 0.0)],
        0.15,
        spread="measured",
    )
    assert one is not None and together is not None and apart is not None
    assert together == pytest.approx(one)
    assert 0.0 < apart < together - 0.1


def test_the_perfect_models_chance_is_reported_beside_the_verdict_and_does_not_change_it() -> None:
    rows = [_judged([9.0, 11.0] * 4, 0.02), _row(120, 100, 100, 50.0, 50.0)]
    rows[1].update({"m_p95_passes": [50.0] * 8, "p_p95_se": 0.02})
    verdict = evaluate(
        rows, p95_tolerance=0.15, knee_tolerance=0.2, below_knee=0.8, replications=10
    )
    assert verdict["passed"]
    chance = verdict["perfect_model_p95_chance"]
    assert 0.0 < chance["measured_spread"] < 1.0
    assert chance["model_spread"] == pytest.approx(
        validate.perfect_model_chance([rows[0]], 0.15, spread="model", replications=10)
    )
    payload = {
        "bounds": {"p95_tolerance": 0.15, "knee_tolerance": 0.2, "below_knee": 0.8},
        "services": {"recommendation": {"rpc": "Recommend", "rows": rows, **verdict}},
        "passed": verdict["passed"],
    }
    text = validate.render_text(payload)
    assert f"with chance {chance['measured_spread']:.2f} given this run's spread" in text
    assert text.rstrip().endswith("PASS")


def test_the_auto_ladder_reaches_at_least_the_first_passs_best_throughput(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run 44: the first calibration pass's fit put the knee at 270/s where its own ladder
    # had reached 475/s, and the ladder's top rate (1.3x the knee) was served in full: the
    # knee went unmeasured. The ladder's best throughput is now a floor for the knee.
    monkeypatch.setattr(validate, "predicted_knee", lambda *_a, **_k: 100.0)
    checked = {
        "services": ["recommendation"],
        "ladder": [1, 4, 8],
        "rates": None,
        "calibration": None,
    }
    _, _, rates, _ = validate.measure(
        _measure_args(tmp_path, passes=1),
        checked,
        _RecordingGenerator(slow_from=10_000),
        Running({}, _workloads()),
        lambda _m: None,
    )
    # The fake service at 8 callers: 8 calls per 0.8 + 1.6 + 1 + 2.4 = 5.8 ms.
    best = 8 * 1000.0 / 5.8
    expected = [round(best * f, 1) for f in validate.AUTO_FRACTIONS]
    assert rates["recommendation"] == pytest.approx(expected, rel=0.02)


def test_a_ladder_that_never_reached_the_knee_fails_the_knee_bound() -> None:
    # Every rate served in full: the highest throughput is the top rate, not the knee, and
    # the prediction's agreement with it says nothing.
    rows = [_row(20, 20, 20, 10.0, 10.0), _row(100, 99, 100, 30.0, 30.0)]
    verdict = evaluate(rows, p95_tolerance=0.15, knee_tolerance=0.2, below_knee=0.8)
    assert abs(verdict["knee_error"]) < 0.2 and verdict["p95_ok"]
    assert not verdict["knee_reached"] and not verdict["knee_ok"] and not verdict["passed"]
    verdict["rpc"], verdict["rows"] = "Recommend", rows
    payload = {
        "services": {"recommendation": verdict},
        "bounds": {"p95_tolerance": 0.15, "knee_tolerance": 0.2, "below_knee": 0.8},
        "passed": False,
    }
    assert "not reached: the top rate 100/s was served at 99/s" in validate.render_text(payload)
    # One that fell behind at its top rate did reach it.
    rows = [_row(20, 20, 20, 10.0, 10.0), _row(100, 90, 92, 30.0, 30.0)]
    verdict = evaluate(rows, p95_tolerance=0.15, knee_tolerance=0.2, below_knee=0.8)
    assert verdict["knee_reached"] and verdict["knee_ok"]
