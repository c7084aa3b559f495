"""Model mode and the queue model: determinism by seed, queueing theory on short runs, the
calibration file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from simulator.model_mode import ModelRun, bare_simpy_rate
from simulator.platform import CalibrationError, load_calibration, parse_calibration
from simulator.scenario import ValidationCase, ValidationConfig, load_scenario
from simulator.validation import erlang_c, theoretical_time_in_system, validate


def small_run(seed: int) -> dict[str, object]:
    scenario = load_scenario("demo").with_overrides(
        seed=seed, shoppers_per_day=1500.0, duration_h=24.0, drain_h=6.0
    )
    result = ModelRun(scenario, load_calibration()).run().as_dict()
    result.pop("wall_s")
    result.pop("events_per_s")
    return result


def test_same_seed_same_model_result_and_other_seed_differs() -> None:
    a, b = small_run(3), small_run(3)
    assert a == b
    c = small_run(4)
    assert c["rpc_latencies"] != a["rpc_latencies"]


def test_model_run_accounts_for_every_order_and_call() -> None:
    result = small_run(8)
    deliveries = result["deliveries"]
    assert isinstance(deliveries, dict)
    placed = deliveries["placed"]
    assert placed > 0
    assert (
        deliveries["delivered_on_time"] + deliveries["delivered_late"] + deliveries["failed"]
        == placed
    )
    assert (
        sum(deliveries["reasons"].values()) == deliveries["delivered_late"] + deliveries["failed"]
    )
    latencies = result["rpc_latencies"]
    assert isinstance(latencies, dict)
    assert latencies["recommendation.Recommend"]["calls"] > 0
    assert latencies["telemetry.Ingest"]["p50_ms"] > 0


def test_more_load_means_more_utilisation() -> None:
    scenario = load_scenario("demo").with_overrides(duration_h=6.0, drain_h=0.5)
    low = ModelRun(scenario, load_calibration(), shoppers_per_day=2000).run()
    high = ModelRun(scenario, load_calibration(), shoppers_per_day=8000).run()
    assert (
        high.utilisation["recommendation"]["mean"] > 2 * low.utilisation["recommendation"]["mean"]
    )


def test_erlang_c_and_pollaczek_khinchine() -> None:
    # Known values: Erlang C with c=2, a=1 is 1/3; M/M/1 is the c=1 case.
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(1, 0.7) == pytest.approx(0.7)
    mm1 = ValidationCase("a", "mm1", 7.0, 10.0)
    mmc1 = ValidationCase("b", "mmc", 7.0, 10.0, 1)
    md1 = ValidationCase("c", "md1", 7.0, 10.0)
    assert theoretical_time_in_system(mm1) == pytest.approx(theoretical_time_in_system(mmc1))
    # M/D/1 waits half as long as M/M/1 at the same load.
    wq_mm1 = theoretical_time_in_system(mm1) - 0.1
    assert theoretical_time_in_system(md1) - 0.1 == pytest.approx(wq_mm1 / 2)


def test_queue_model_matches_theory_on_short_runs() -> None:
    config = ValidationConfig(
        cases=(
            ValidationCase("M/M/1", "mm1", 6.0, 10.0),
            ValidationCase("M/M/3", "mmc", 24.0, 10.0, 3),
            ValidationCase("M/D/1", "md1", 6.0, 10.0),
        ),
        replications=4,
        customers=15_000,
        warmup=1_000,
        tolerance=0.08,
    )
    results = validate(config, seed=1)
    for result in results:
        assert result.passed, result
        assert result.ci_low_s < result.simulated_s < result.ci_high_s


def test_validation_fails_a_wrong_model() -> None:
    # Claiming M/D/1 theory for an exponential server must fail: the check can fail.
    case = ValidationCase("wrong", "mm1", 6.0, 10.0)
    config = ValidationConfig(cases=(case,), replications=3, customers=10_000, warmup=500)
    [result] = validate(config, seed=2)
    md1 = dataclasses.replace(case, kind="md1")
    assert (
        abs(result.simulated_s - theoretical_time_in_system(md1)) / theoretical_time_in_system(md1)
        > 0.05
    )


def test_calibration_file_errors_name_the_key(tmp_path: Path) -> None:
    default = load_calibration()
    assert default.services["intent"].batching is not None
    assert default.provenance["measured"] is False
    with pytest.raises(CalibrationError, match=r"services\.intent\.rpcs\.Classify\.mean_ms"):
        parse_calibration(
            {"services": {"intent": {"workers": 1, "rpcs": {"Classify": {"mean_ms": "x"}}}}}
        )
    with pytest.raises(CalibrationError, match="distribution"):
        parse_calibration(
            {"services": {"a": {"rpcs": {"b": {"mean_ms": 1, "distribution": "pareto"}}}}}
        )
    bad = tmp_path / "c.json"
    bad.write_text("{\n  oops\n}", encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"c.json:2: invalid JSON"):
        load_calibration(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"services": {"x": {"rpcs": {"y": {"mean_ms": 2}}}}}))
    assert load_calibration(good).services["x"].rpcs["y"].mean_ms == 2.0


def test_bare_simpy_loop_counts_events() -> None:
    assert bare_simpy_rate(events=20_000, processes=100) > 0


def test_every_action_makes_its_calls_and_every_session_ends() -> None:
    # Model mode compiles blocks of sessions into call lists: each action must reach its
    # service exactly as the action-to-RPC table says, and the counts must tie out.
    result = small_run(5)
    actions = result["actions"]
    latencies = result["rpc_latencies"]
    assert isinstance(actions, dict) and isinstance(latencies, dict)

    def calls(key: str) -> int:
        entry = latencies.get(key, {"calls": 0, "failed_network": 0})
        return int(entry["calls"]) + int(entry["failed_network"])

    assert actions["leave"] + actions["checkout"] == result["shoppers"]
    assert calls("recommendation.SimilarItems") == actions["browse"]
    assert calls("recommendation.Recommend") == actions["recommend"]
    assert calls("recommendation.RecordFeedback") == (
        actions["click"] + actions["add_to_cart"] + actions["checkout"]
    )
    assert calls("intent.Classify") == actions.get("support", 0)
    assert calls("dispatch.SubmitOrder") == actions["checkout"]
    deliveries = result["deliveries"]
    recommendations = result["recommendations"]
    assert isinstance(deliveries, dict) and isinstance(recommendations, dict)
    assert deliveries["placed"] == actions["checkout"]
    assert recommendations["shown"] == 10 * actions["recommend"]
    assert recommendations["clicked"] == actions["click"]


def test_every_telemetry_batch_is_one_call_attempt() -> None:
    # A van sends its batches through one reused call object: every batch sent (first tries
    # and resends) is still one attempt that either reaches the service or is dropped.
    result = small_run(6)
    latencies, telemetry = result["rpc_latencies"], result["telemetry"]
    assert isinstance(latencies, dict) and isinstance(telemetry, dict)
    ingest = latencies["telemetry.Ingest"]
    assert ingest["calls"] + ingest["failed_network"] == telemetry["batches"] > 0


def test_a_van_reuses_its_telemetry_call_only_once_the_last_is_through() -> None:
    scenario = load_scenario("demo").with_overrides(shoppers_per_day=100.0)
    run = ModelRun(scenario, load_calibration())
    spec = run.world.vehicles.fleet(run.world.rng("fleet"), start_s=0.0)[0].spec
    van = SimpleNamespace(
        telemetry=None, link=run.network.link(spec.vehicle_id, spec.radio, moving=True)
    )
    run._send_telemetry(van, 5)  # type: ignore[arg-type]
    first = van.telemetry
    assert first is not None and first.in_flight
    # Sent while the first is in flight: a call of its own.
    run._send_telemetry(van, 7)  # type: ignore[arg-type]
    second = van.telemetry
    assert second is not first and (first.items, second.items) == (5, 7)
    run.env.run(until=30.0)
    assert not first.in_flight and not second.in_flight
    run._send_telemetry(van, 3)  # type: ignore[arg-type]
    assert van.telemetry is second and second.items == 3
    run.env.run(until=60.0)
    ingest = run.stations["telemetry"].stats["Ingest"]
    assert len(ingest.latency_s) + ingest.failed_network == run.telemetry_batches == 3
