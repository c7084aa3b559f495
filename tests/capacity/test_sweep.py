"""``shoptwin sweep``: parameter parsing, the grid, overrides, the CI arithmetic, and the same
sweep giving the same numbers on the process pool and on a Dask LocalCluster."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from services.cli.main import main
from simulator.scenario import load_scenario
from simulator.sweep import (
    SweepError,
    SweepSpec,
    TaskRunner,
    apply_overrides,
    expand_grid,
    load_inputs,
    mean_ci,
    parse_param,
    replication_seed,
    run_sweep,
    t_quantile,
)

TINY = (
    "name: tiny\nseed: 3\nshoppers_per_day: 3000\nduration_h: 3\ndrain_h: 0.5\n"
    "catalogue: {items: 60}\nfleet: {vehicles: 2}\n"
)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    return path


def test_param_values_are_typed_as_yaml_reads_them() -> None:
    param = parse_param("platform.workers.intent=1,2,4")
    assert param.key == "platform.workers.intent"
    assert param.values == (1, 2, 4)
    assert parse_param("network.enabled=true,false").values == (True, False)
    assert parse_param("session.checkout_probability=0.2,0.5").values == (0.2, 0.5)
    assert parse_param("fleet.radio=lte,5g-sa").values == ("lte", "5g-sa")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fleet.vehicles", "expected NAME=V1,V2"),
        ("=1,2", "the name before '=' is empty"),
        ("fleet.vehicles=1,,2", "fleet.vehicles: empty value"),
        ("fleet.vehicles=", "fleet.vehicles: empty value"),
        ("fleet.vehicles=2,2", "fleet.vehicles: repeated value"),
    ],
)
def test_bad_params_name_the_param(text: str, message: str) -> None:
    with pytest.raises(SweepError) as info:
        parse_param(text)
    assert f"--param {text}" in str(info.value)
    assert message in str(info.value)


def test_grid_is_every_combination_first_param_slowest() -> None:
    grid = expand_grid([parse_param("a=1,2"), parse_param("b=x,y,z")])
    assert grid == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 1, "b": "z"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
        {"a": 2, "b": "z"},
    ]
    assert expand_grid([]) == [{}]
    with pytest.raises(SweepError, match="given twice"):
        expand_grid([parse_param("a=1"), parse_param("a=2")])


def test_overrides_set_nested_keys_and_mappings() -> None:
    scenario = load_scenario("demo")
    changed = apply_overrides(
        scenario,
        {
            "fleet.vehicles": 3,
            "session.checkout_probability": 0.9,
            "platform.workers.recommendation": 5,
            "network.enabled": False,
            "catalogue.items": 100,
            "shoppers_per_day": 10,
        },
    )
    assert changed.fleet.vehicles == 3
    assert changed.session.checkout_probability == 0.9
    assert changed.platform.workers["recommendation"] == 5
    assert changed.network.enabled is False
    assert changed.catalogue_items == 100
    assert changed.shoppers_per_day == 10.0
    assert scenario.fleet.vehicles == 8  # the original is untouched


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"fleet.vehicels": 1}, "fleet.vehicels: unknown key; known keys: "),
        ({"nonsense": 1}, "nonsense: unknown key"),
        ({"fleet.vehicles": "ten"}, "fleet.vehicles: expected an integer, got 'ten'"),
        ({"fleet.vehicles": 0}, "fleet.vehicles: must be >= 1"),
        ({"network.enabled": 1}, "network.enabled: expected true or false"),
        ({"platform.workers.intent": 0}, "platform.workers.intent: expected an integer >= 1"),
        ({"platform.calibration": "x.json"}, "platform.calibration: cannot be swept"),
        ({"fleet.road": 3}, "fleet.road: cannot be swept"),
    ],
)
def test_bad_overrides_name_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SweepError) as info:
        apply_overrides(load_scenario("demo"), overrides)
    assert message in str(info.value)


def test_cli_param_errors_name_the_param_and_key(
    tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for param, message in [
        ("platform.workers.recomendation=1,2", "platform.workers.recomendation: unknown service"),
        ("fleet.vehicles=1,zero", "fleet.vehicles: expected an integer, got 'zero'"),
        ("session.nope=1", "session.nope: unknown key"),
    ]:
        code = main(["sweep", str(tiny), "--param", param, "--no-progress"])
        assert code == 2
        err = capsys.readouterr().err
        assert f"--param {param}" in err and message in err


def test_replication_seeds_depend_on_the_replication_only(tiny: Path) -> None:
    scenario, text, calibration, source = load_inputs(str(tiny), None)
    spec = SweepSpec(text, scenario.source, calibration, source, 3, [{"fleet.vehicles": 1}, {}], 3)
    tasks = spec.tasks()
    by_point = [[t["seed"] for t in tasks if t["point"] == p] for p in (0, 1)]
    assert by_point[0] == by_point[1] == [replication_seed(3, r) for r in range(3)]
    assert len(set(by_point[0])) == 3
    assert replication_seed(4, 0) != replication_seed(3, 0)


def test_mean_ci_matches_a_hand_computed_case() -> None:
    stat = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    # mean 3, s = sqrt(10 / 4) = 1.5811, t(0.975, 4) = 2.7764, half = 2.7764 * 1.5811 / sqrt(5)
    assert stat["mean"] == pytest.approx(3.0)
    assert stat["sd"] == pytest.approx(1.5811388, rel=1e-6)
    assert t_quantile(0.95, 4) == pytest.approx(2.7764451, rel=1e-6)
    assert stat["ci_low"] == pytest.approx(3.0 - 1.9632432, rel=1e-6)
    assert stat["ci_high"] == pytest.approx(3.0 + 1.9632432, rel=1e-6)
    assert stat["n"] == 5
    one = mean_ci([7.0, math.nan])
    assert one["mean"] == 7.0 and one["ci_high"] is None and one["n"] == 1
    assert mean_ci([])["mean"] is None


def _strip_wall(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if k != "wall_s"} for p in points]


def test_same_sweep_on_process_pool_and_dask_local_cluster(tiny: Path) -> None:
    from distributed import LocalCluster

    scenario, text, calibration, source = load_inputs(str(tiny), None)
    spec = SweepSpec(
        text,
        scenario.source,
        calibration,
        source,
        scenario.seed,
        expand_grid([parse_param("session.checkout_probability=0.1,0.6")]),
        2,
    )
    with TaskRunner(processes=2) as pool:
        local = run_sweep(spec, pool)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        TaskRunner(scheduler=cluster.scheduler_address) as dask,
    ):
        remote = run_sweep(spec, dask)
    assert _strip_wall(local) == _strip_wall(remote)
    # The sweep did something: more checkouts at the second point, and real latencies.
    low, high = (p["metrics"] for p in local)
    assert high["orders_placed"]["mean"] > low["orders_placed"]["mean"]
    assert low["recommendation.Recommend.p99_ms"]["mean"] > 0
    assert low["recommendation.Recommend.p99_ms"]["ci_high"] is not None
    # Common random numbers: replication r of both points starts from the same seed.
    assert local[0]["seeds"] == local[1]["seeds"]


def test_sweep_command_writes_json_and_csv(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "sweep",
            str(tiny),
            "--param",
            "platform.workers.recommendation=1,2",
            "--replications",
            "2",
            "--processes",
            "2",
            "--duration-h",
            "1",
            "--out",
            str(out),
            "--json",
            "--no-progress",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["run"]["scenario"] == "tiny"
    assert payload["run"]["seed"] == 3
    assert "commit" in payload["run"]
    assert payload["run"]["params"] == {"platform.workers.recommendation": [1, 2]}
    workers = [p["metrics"]["recommendation.workers"]["mean"] for p in payload["points"]]
    assert workers == [1.0, 2.0]
    assert json.loads((out / "sweep.json").read_text())["points"] == payload["points"]
    csv_text = (out / "sweep.csv").read_text()
    assert csv_text.startswith("point,platform.workers.recommendation,metric,mean,sd")
    assert "recommendation.Recommend.p99_ms" in csv_text


def test_shipped_scenarios_resolve_their_shipped_calibration_by_name() -> None:
    """black-friday names `measured-2core`, a shipped file, not a path next to the scenario."""
    from simulator.sweep import load_inputs

    scenario, _, data, source = load_inputs("black-friday", None)
    assert scenario.platform.calibration == "measured-2core"
    assert source == "calibration/measured-2core.json"
    assert data["provenance"]["measured"] is True
