"""The `simulate` and `bench simulator` commands: arguments, outputs, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli.main import main


def write_scenario(path: Path, extra: str = "") -> Path:
    path.write_text(
        "name: tiny\nseed: 3\nshoppers_per_day: 800\nduration_h: 12\ndrain_h: 2\n"
        "catalogue: {items: 60}\nfleet: {vehicles: 3}\n" + extra,
        encoding="utf-8",
    )
    return path


def test_simulate_model_writes_json_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = write_scenario(tmp_path / "tiny.yaml")
    out = tmp_path / "out"
    code = main(["simulate", str(scenario), "--out", str(out), "--json", "--no-progress"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["run"]["scenario"] == "tiny"
    assert payload["run"]["seed"] == 3
    assert "commit" in payload["run"]
    assert payload["result"]["shoppers"] > 0
    saved = json.loads((out / "result.json").read_text())
    assert saved["result"]["rpc_latencies"] == payload["result"]["rpc_latencies"]
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Latency percentiles over time" in html


def test_simulate_table_and_seed_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = write_scenario(tmp_path / "tiny.yaml")
    code = main(
        [
            "simulate",
            str(scenario),
            "--seed",
            "9",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--bench",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "scenario tiny (seed 9)" in text
    assert "recommendation.Recommend" in text
    assert "bare SimPy loop" in text


def test_bad_scenario_exits_2_naming_key_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = write_scenario(tmp_path / "bad.yaml", "session:\n  think_mean_s: slow\n")
    code = main(["simulate", str(scenario), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.yaml:9: session.think_mean_s: expected a number" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "demo", "--speed", "0"], "--speed: must be > 0"),
        (["simulate", "demo", "--shoppers", "-1"], "--shoppers: must be >= 0"),
        (["simulate", "demo", "--up"], "--up/--targets: only with --mode live"),
        (["simulate", "--validate", "--replications", "1"], "--replications: must be >= 2"),
        (["simulate"], "scenario: name a scenario"),
        (["simulate", "nope"], "no scenario 'nope'"),
        (
            ["simulate", "demo", "--mode", "live", "--targets", "foo=1:2"],
            "--targets: 'foo=1:2'",
        ),
    ],
)
def test_bad_arguments_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_mode_is_checked_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate", "demo", "--mode", "fast"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_validate_passes_and_fails_by_tolerance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "v.yaml"
    scenario.write_text(
        "name: v\nseed: 4\nshoppers_per_day: 0\nvalidation:\n  tolerance: 0.08\n  cases:\n"
        "    - {name: mm1, kind: mm1, arrival_rate: 5, service_rate: 10}\n",
        encoding="utf-8",
    )
    args = [
        "simulate",
        str(scenario),
        "--validate",
        "--replications",
        "3",
        "--customers",
        "10000",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    assert main(args) == 0
    assert "1/1 cases within 8%" in capsys.readouterr().out
    # A tolerance no simulation meets: the command must exit non-zero.
    scenario.write_text(scenario.read_text().replace("0.08", "0.000001"), encoding="utf-8")
    assert main(args) == 1
    assert "failed: mm1" in capsys.readouterr().out
