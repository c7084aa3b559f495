"""``shoptwin capacity plan``: the SLO grammar, the peak window, and a plan that needs more
workers when the service is slower."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.cli.main import main
from simulator.behaviour import DailyCurve
from simulator.capacity.plan import evaluate, peak_window, window_overrides
from simulator.capacity.slo import SloError, parse_slo
from simulator.scenario import load_scenario
from simulator.sweep import apply_overrides


@pytest.mark.parametrize(
    ("text", "service", "keys", "limit"),
    [
        ("recommend.p99<200ms", "recommendation", ["recommendation.Recommend.p99_ms"], 200.0),
        ("classify.p95<0.1s", "intent", ["intent.Classify.p95_ms"], 100.0),
        ("submit_order.mean < 50 ms", "dispatch", ["dispatch.SubmitOrder.mean_ms"], 50.0),
        ("ingest.p50<20ms", "telemetry", ["telemetry.Ingest.p50_ms"], 20.0),
        (
            "recommendation.SimilarItems.p99<1s",
            "recommendation",
            ["recommendation.SimilarItems.p99_ms"],
            1000.0,
        ),
        ("telemetry.utilisation<70%", "telemetry", ["telemetry.utilisation_peak"], 0.7),
        ("intent.utilisation<0.5", "intent", ["intent.utilisation_peak"], 0.5),
        (
            "dispatch.error_rate<1%",
            "dispatch",
            ["dispatch.SubmitOrder.error_rate", "dispatch.ReportStop.error_rate"],
            0.01,
        ),
        (
            "dispatch.p99<300ms",
            "dispatch",
            ["dispatch.SubmitOrder.p99_ms", "dispatch.ReportStop.p99_ms"],
            300.0,
        ),
    ],
)
def test_slo_grammar(text: str, service: str, keys: list[str], limit: float) -> None:
    slo = parse_slo(text)
    assert slo.service == service
    assert slo.keys() == keys
    assert slo.limit == pytest.approx(limit)
    assert not slo.inclusive


def test_slo_value_is_the_worst_rpc_and_inclusive_bound() -> None:
    slo = parse_slo("dispatch.p99<=300ms")
    metrics = {
        "dispatch.SubmitOrder.p99_ms": {"mean": 120.0, "ci_high": 150.0},
        "dispatch.ReportStop.p99_ms": {"mean": 280.0, "ci_high": 300.0},
    }
    assert slo.value(metrics) == 280.0
    assert slo.value(metrics, "ci_high") == 300.0
    assert slo.met_by(300.0) and slo.inclusive
    assert slo.margin(150.0) == pytest.approx(0.5)
    assert parse_slo("recommend.p99<200ms").value({}) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("recommend p99 < 200ms", "expected TARGET.METRIC<VALUE[UNIT]"),
        ("recommend.p99>200ms", "expected TARGET.METRIC<VALUE[UNIT]"),
        ("recomend.p99<200ms", "unknown target 'recomend'"),
        ("recommendation.Recomend.p99<200ms", "unknown RPC 'recommendation.Recomend'"),
        ("dispatch.GetOrderStatus.p99<200ms", "unknown RPC"),
        ("recommend.p90<200ms", "unknown metric 'p90'"),
        ("recommend.p99<200", "a latency needs a unit"),
        ("recommend.utilisation<80ms", "is a fraction"),
        ("telemetry.utilisation<120%", "must be in (0, 1]"),
        ("recommend.p99<0ms", "the limit must be > 0"),
    ],
)
def test_bad_slos_are_named(text: str, message: str) -> None:
    with pytest.raises(SloError) as info:
        parse_slo(text)
    assert f"--slo {text!r}" in str(info.value)
    assert message in str(info.value)


def test_slo_for_a_service_the_calibration_lacks() -> None:
    with pytest.raises(SloError, match="the calibration has no service 'telemetry'"):
        parse_slo("telemetry.p99<1s", ["recommendation"])


def test_peak_window_centres_on_the_busiest_hour() -> None:
    scenario = load_scenario("black-friday")
    window = peak_window(scenario, warmup_min=10, window_min=20)
    assert window.peak_hour == 20  # the 2.6 weight
    assert window.offset_h == 20
    assert window.measure_from_s == 20 * 60
    assert window.duration_h == pytest.approx(40 / 60)
    assert window.as_dict()["measured_from"] == "20:20"
    assert window.as_dict()["measured_to"] == "20:40"
    overrides = window_overrides(scenario, window)
    changed = apply_overrides(scenario, overrides)
    # Simulated time t is original time t + 20 h: the rotated curve gives the same rates.
    t = np.linspace(0, window.duration_h * 3600, 50)
    original = DailyCurve(scenario.daily_curve).multiplier(t + 20 * 3600)
    rotated = DailyCurve(changed.daily_curve).multiplier(t)
    np.testing.assert_allclose(rotated, original)
    # Vans on shift 07:00-23:00 are on shift for the whole window.
    assert changed.fleet.shift_start_s == 0.0
    assert changed.fleet.shift_end_s == 3 * 3600.0
    assert changed.drain_h == 0.0
    # A longer warm-up starts an hour earlier.
    assert peak_window(scenario, warmup_min=30, window_min=20).offset_h == 19


def test_evaluate_uses_the_upper_confidence_bound_and_rejects_saturation() -> None:
    slos = [parse_slo("recommend.p99<200ms")]
    ok = {
        "recommendation.Recommend.p99_ms": {"mean": 150.0, "ci_high": 190.0},
        "recommendation.utilisation_peak": {"mean": 0.8},
    }
    assert evaluate("recommendation", slos, ok) == (True, pytest.approx(0.95))
    wide = {**ok, "recommendation.Recommend.p99_ms": {"mean": 150.0, "ci_high": 210.0}}
    assert evaluate("recommendation", slos, wide)[0] is False
    saturated = {**ok, "recommendation.utilisation_peak": {"mean": 1.0}}
    assert evaluate("recommendation", slos, saturated)[0] is False


SCENARIO = (
    "name: shop\nseed: 9\nshoppers_per_day: 40000\ncatalogue: {items: 60}\nfleet: {vehicles: 3}\n"
)


def _calibration(tmp_path: Path, factor: float) -> Path:
    """The shipped calibration with recommendation's service times multiplied by ``factor``."""
    data: dict[str, Any] = json.loads(
        resources.files("simulator").joinpath("calibration/default.json").read_text("utf-8")
    )
    for rpc in data["services"]["recommendation"]["rpcs"].values():
        rpc["mean_ms"] *= factor
    path = tmp_path / f"calibration-{factor:g}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _plan(tmp_path: Path, calibration: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    scenario = tmp_path / "shop.yaml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    out = tmp_path / f"plan-{calibration.stem}"
    code = main(
        [
            "capacity",
            "plan",
            str(scenario),
            "--slo",
            "recommend.p99<2000ms",
            "--slo",
            "classify.p99<500ms",
            "--calibration",
            str(calibration),
            "--replications",
            "3",
            "--processes",
            "2",
            "--warmup-min",
            "5",
            "--window-min",
            "10",
            "--no-network",
            "--max-workers",
            "6",
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ]
    )
    return code, json.loads((out / "plan.json").read_text())


def test_plan_needs_more_workers_when_the_service_is_slower(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fast_code, fast = _plan(tmp_path, _calibration(tmp_path, 1.0))
    slow_code, slow = _plan(tmp_path, _calibration(tmp_path, 100.0))
    assert fast_code == 0 and slow_code == 0
    assert fast["all_met"] and slow["all_met"]
    assert fast["workers"]["recommendation"] == 1
    # ~1 s of recommendation work per simulated second at the peak: one worker saturates.
    assert slow["workers"]["recommendation"] >= 2
    assert slow["workers"]["recommendation"] > fast["workers"]["recommendation"]
    # Intent was not slowed down: the same answer both times.
    assert slow["workers"]["intent"] == fast["workers"]["intent"]
    row = next(r for r in slow["table"] if r["service"] == "recommendation")
    assert row["met"] == "yes"
    assert row["ci_high"] < 2000.0
    assert 0 < row["margin_pct"] < 100
    assert 0 < row["util_peak"] < 1
    # A count one below the answer missed (or saturated): the answer is the smallest.
    below = [
        s
        for s in slow["search"]
        if s["workers"]["recommendation"] == slow["workers"]["recommendation"] - 1
    ]
    assert all(not s["passed"]["recommendation"] for s in below)
    text = capsys.readouterr().out
    assert "recommendation.Recommend.p99 < 2000 ms" in text
    assert "peak arrival rates" in text


def test_plan_exits_1_with_the_best_found_when_no_count_is_enough(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, payload = _plan(tmp_path, _calibration(tmp_path, 100.0), "--max-workers", "1")
    assert code == 1
    assert not payload["all_met"]
    assert "recommendation" in payload["unmet"]
    assert "no count up to --max-workers 1" in capsys.readouterr().out


def test_plan_rejects_a_bad_slo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["capacity", "plan", "demo", "--slo", "recommend.p99<fast", "--no-progress"])
    assert code == 2
    assert "--slo 'recommend.p99<fast'" in capsys.readouterr().err
