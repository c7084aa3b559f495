"""`shoptwin loadtest` argument checking: bad options get a message naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.cli import parse_duration
from loadtests.runner import LoadTestRequest, locust_commands
from services.cli.main import build_parser, main
from services.runtime.settings import SettingsError


def request_of(*argv: str) -> LoadTestRequest:
    args = build_parser().parse_args(["loadtest", *argv])
    return LoadTestRequest.from_args(args)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2.5s", 2.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration("--duration", text) == seconds


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--shape", "zigzag"], "--shape"),
        (["--duration", "ten"], "--duration"),
        (["--duration", "0s"], "--duration"),
        (["--rate", "-5"], "--rate"),
        (["--shape", "closed", "--users", "0"], "--users"),
        (["--shape", "steps", "--steps", "0"], "--steps"),
        (["--workers", "0"], "--workers"),
        (["--max-in-flight", "0"], "--max-in-flight"),
        (["--vehicles", "0"], "--vehicles"),
        (["--timeout", "0"], "--timeout"),
        (["--target-dispatch", "nowhere"], "--target-dispatch"),
        (["--target-intent", "host:99999"], "--target-intent"),
        (["--up", "--target-intent", "127.0.0.1:1"], "--target-intent"),
        (["--record", "x", "--up"], "--record"),
        (["--slo", "/no/such/slo.yaml"], "--slo"),
        (["--shape", "spike", "--scenario", "nope"], "--scenario"),
        (["--master-port", "70000"], "--master-port"),
        (["--fleet-speedup", "0.5"], "--fleet-speedup"),
        (["--remote-workers", "2"], "--master-port"),
        (["--remote-workers", "2", "--master-port", "5557"], "--master-bind-host"),
    ],
)
def test_bad_options_name_the_option(argv: list[str], flag: str) -> None:
    with pytest.raises(SettingsError, match=f"^{flag}:"):
        request_of(*argv)


def test_cli_prints_the_error_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--workload", "echo", "--rate", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shoptwin: error: --rate:") and "Traceback" not in err


def test_unknown_workload_is_refused_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["loadtest", "--workload", "everything"])
    assert "--workload" in capsys.readouterr().err


def test_targets_default_to_the_services_ports_and_workers_make_lanes(tmp_path: Path) -> None:
    request = request_of("--workload", "journey", "--workers", "3", "--out", str(tmp_path))
    assert request.options.targets == {
        "recommendation": "127.0.0.1:50051",
        "intent": "127.0.0.1:50052",
        "dispatch": "127.0.0.1:50053",
    }
    assert request.options.lanes == 3
    commands = locust_commands(request, 5599)
    assert len(commands) == 4
    master, *workers = commands
    assert "--master" in master and master[master.index("--expect-workers") + 1] == "3"
    assert "--headless" in master and "--csv" in master and "--html" in master
    assert all("--worker" in w and "5599" in w for w in workers)
    # Every process gets the same options.
    options = master[master.index("--shoptwin-options") + 1]
    assert all(w[w.index("--shoptwin-options") + 1] == options for w in workers)


def test_record_mode_fixes_run_tag_and_clock() -> None:
    a = request_of("--record", "/tmp/x", "--seed", "4")
    b = request_of("--record", "/tmp/x", "--seed", "4")
    assert a.options == b.options
    live = request_of("--seed", "4")
    assert live.options.run_tag != "lt" and live.options.record_dir == ""
