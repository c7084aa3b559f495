"""SLO files and verdicts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from loadtests.slo import (
    DEFAULT_SLO_PATH,
    Objective,
    RpcStats,
    evaluate,
    load_slo,
    parse_slo,
    read_locust_stats_csv,
)
from loadtests.targets import all_rpc_names
from services.runtime.settings import SettingsError

SLO = {
    "default": {"max_error_rate": 0.01, "p95_ms": 100, "p99_ms": 200},
    "rpcs": {"EchoService/Echo": {"p95_ms": 5}, "X/Quiet": {"p99_ms": None}},
}


def test_rpc_entries_fall_back_to_default() -> None:
    slo = parse_slo(SLO)
    assert slo.objective("EchoService/Echo") == Objective(0.01, 5.0, 200.0)
    assert slo.objective("X/Quiet") == Objective(0.01, 100.0, None)
    assert slo.objective("Other/Rpc") == Objective(0.01, 100.0, 200.0)


def test_verdict_passes_and_fails_per_threshold() -> None:
    slo = parse_slo(SLO)
    stats = [
        RpcStats("EchoService/Echo", requests=1000, failures=0, p95_ms=4.0, p99_ms=9.0),
        RpcStats("A/Slow", requests=1000, failures=0, p95_ms=150.0, p99_ms=190.0),
        RpcStats("A/Flaky", requests=100, failures=2, p95_ms=10.0, p99_ms=20.0),
        RpcStats("A/Idle", requests=0, failures=0, p95_ms=math.nan, p99_ms=math.nan),
    ]
    failed = {(c.rpc, c.metric) for c in evaluate(stats, slo) if not c.passed}
    assert failed == {("A/Slow", "p95_ms"), ("A/Flaky", "error_rate")}


def test_all_failures_fail_on_error_rate_only() -> None:
    checks = evaluate([RpcStats("A/Down", 10, 10, math.nan, math.nan)], parse_slo(SLO))
    assert [(c.metric, c.passed) for c in checks] == [("error_rate", False)]


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"default": {"p95": 1}}, "default.p95"),
        ({"rpcs": {"A/B": {"p99_ms": -1}}}, "rpcs.A/B.p99_ms"),
        ({"rpcs": {"A/B": {"max_error_rate": "low"}}}, "rpcs.A/B.max_error_rate"),
        ({"limits": {}}, "unknown key 'limits'"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_slo_files_name_the_key(data: object, where: str) -> None:
    with pytest.raises(SettingsError, match=r"--slo|SLO file") as info:
        parse_slo(data, "--slo x.yaml")
    assert where in str(info.value)


def test_unreadable_slo_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^--slo: cannot read"):
        load_slo(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("default: [1,\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"^--slo: .* not valid YAML"):
        load_slo(bad)


def test_packaged_slo_file_is_valid_and_names_real_rpcs() -> None:
    slo = load_slo(DEFAULT_SLO_PATH)
    known = set(all_rpc_names(("echo", "recommendation", "intent", "dispatch", "telemetry")))
    assert set(slo.rpcs) - known == {"open-loop/dropped"}


def test_reads_locust_stats_csv(tmp_path: Path) -> None:
    path = tmp_path / "run_stats.csv"
    path.write_text(
        '"Type","Name","Request Count","Failure Count","Median Response Time",'
        '"Average Response Time","Min Response Time","Max Response Time",'
        '"Average Content Size","Requests/s","Failures/s","50%","66%","75%","80%","90%",'
        '"95%","98%","99%","99.9%","99.99%","100%"\n'
        '"grpc","EchoService/Echo","120","3","4","5.1","1","40","64","60.0","1.5",'
        '"4","5","6","6","8","12","20","30","40","40","40"\n'
        '"grpc","TelemetryService/WatchAlerts","0","0","0","0","0","0","0","0","0",'
        '"N/A","N/A","N/A","N/A","N/A","N/A","N/A","N/A","N/A","N/A","N/A"\n'
        '"","Aggregated","120","3","4","5.1","1","40","64","60.0","1.5",'
        '"4","5","6","6","8","12","20","30","40","40","40"\n',
        encoding="utf-8",
    )
    rows = read_locust_stats_csv(path)
    assert [r.name for r in rows] == ["EchoService/Echo", "TelemetryService/WatchAlerts"]
    echo = rows[0]
    assert (echo.requests, echo.failures, echo.p95_ms, echo.p99_ms) == (120, 3, 12.0, 30.0)
    assert echo.error_rate == pytest.approx(0.025)
    assert (echo.rps, echo.p50_ms) == (60.0, 4.0)
    assert math.isnan(rows[1].p95_ms)
