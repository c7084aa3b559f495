"""Real Locust runs (child processes, as `shoptwin loadtest` runs them) against the bare echo
service, and dry runs that record the calls to check that a seed fixes the request sequence."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.slo import read_locust_stats_csv
from services.runtime.process import ServiceProcess, free_port

pytestmark = pytest.mark.slow


def shoptwin(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "loadtest", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def errors_only_slo(tmp_path: Path) -> str:
    """An SLO file that judges errors only: latency on a shared test machine is not a result."""
    path = tmp_path / "errors-only.yaml"
    path.write_text("default: {max_error_rate: 0, p95_ms: null, p99_ms: null}\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def echo_target() -> Iterator[str]:
    proc = ServiceProcess("echo", free_port(), extra_args=["--metrics-port", "0"])
    proc.start()
    try:
        proc.wait_serving(60)
        yield proc.target
    finally:
        proc.stop()


def test_closed_loop_echo_passes_and_writes_csv_and_html(
    tmp_path: Path, errors_only_slo: str
) -> None:
    out = tmp_path / "run"
    result = shoptwin(
        "--workload", "echo", "--up", "--shape", "closed", "--users", "4",
        "--duration", "3s", "--out", str(out), "--slo", errors_only_slo,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: PASS" in result.stdout
    stats = {s.name: s for s in read_locust_stats_csv(out / "locust_stats.csv")}
    assert stats["EchoService/Echo"].requests > 0
    assert stats["EchoService/Echo"].failures == 0
    assert (out / "report.html").read_text(encoding="utf-8").lstrip().startswith("<!")
    verdict = json.loads((out / "verdict.json").read_text(encoding="utf-8"))
    assert verdict["passed"] is True and verdict["meta"]["arguments"]["workload"] == "echo"


def test_open_loop_drops_beyond_max_in_flight_and_the_verdict_fails(
    tmp_path: Path, echo_target: str
) -> None:
    out = tmp_path / "run"
    result = shoptwin(
        "--workload", "echo", "--target-echo", echo_target, "--shape", "constant",
        "--rate", "400", "--duration", "3s", "--max-in-flight", "1", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    stats = {s.name: s for s in read_locust_stats_csv(out / "locust_stats.csv")}
    assert stats["open-loop/dropped"].failures > 0
    assert "open-loop/dropped" in result.stdout and "verdict: FAIL" in result.stdout


def test_two_workers_share_the_arrivals(
    tmp_path: Path, echo_target: str, errors_only_slo: str
) -> None:
    out = tmp_path / "run"
    result = shoptwin(
        "--workload", "echo", "--target-echo", echo_target, "--workers", "2",
        "--shape", "constant", "--rate", "150", "--duration", "4s",
        "--max-arrivals", "200", "--out", str(out), "--slo", errors_only_slo,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    stats = {s.name: s for s in read_locust_stats_csv(out / "locust_stats.csv")}
    # Two lanes of at most 100 arrivals each; 300 expected in 4 s, so the cap binds.
    assert stats["EchoService/Echo"].requests == 200
    assert (out / "worker-0.log").exists() and (out / "worker-1.log").exists()


def recorded(directory: Path) -> dict[str, list[tuple[str, str]]]:
    """Calls per transaction key, in call order (keys interleave in time; calls within a
    transaction do not)."""
    calls: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for path in sorted(directory.glob("calls-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            calls[record["key"]].append((record["rpc"], record["request_sha256"]))
    return dict(calls)


def test_same_seed_same_request_sequence_without_a_server(tmp_path: Path) -> None:
    def dry_run(name: str, seed: int) -> dict[str, list[tuple[str, str]]]:
        result = shoptwin(
            "--workload", "suite", "--shape", "constant", "--rate", "200", "--duration", "2s",
            "--max-arrivals", "60", "--seed", str(seed), "--vehicles", "2",
            "--record", str(tmp_path / name), "--out", str(tmp_path / f"{name}-out"),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return recorded(tmp_path / name)

    first, again, other = dry_run("a", 11), dry_run("b", 11), dry_run("c", 12)
    arrivals = {k: v for k, v in first.items() if k.startswith("lane")}
    assert len(arrivals) == 60
    rpcs = {rpc for calls in first.values() for rpc, _ in calls}
    assert {"RecommendationService/Recommend", "TelemetryService/Upload"} <= rpcs
    # Fleet users (vans) drive in real time, so how far they got depends on timing: compare
    # the arrivals, whose count is fixed.
    assert arrivals == {k: v for k, v in again.items() if k.startswith("lane")}
    assert arrivals != {k: v for k, v in other.items() if k.startswith("lane")}
