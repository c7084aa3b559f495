"""calibrate and validate end to end against a real recommendation service (a few seconds,
a short ladder), and bad flags named in the message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli.main import main
from services.runtime.process import ServiceProcess, free_port
from simulator.capacity.calibrate import CONTENTION_FIT_UPTO, OPEN_FRACTIONS
from simulator.platform import load_calibration


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A recommendation service on a small synthetic model, and echo, as child processes."""
    from services.recommendation.bench import synthetic_model

    root = tmp_path_factory.mktemp("capacity")
    model = synthetic_model(400, 200, rank=16)
    model_dir = root / "model"
    model.save(model_dir)
    common = ["--log-level", "warning", "--data-dir", str(root)]
    metrics_port = free_port()
    rec = ServiceProcess(
        "recommendation",
        free_port(),
        extra_args=[*common, "--model-dir", str(model_dir), "--metrics-port", str(metrics_port)],
        log_path=root / "rec.log",
    )
    common.extend(["--metrics-port", "0"])
    echo = ServiceProcess("echo", free_port(), extra_args=common, log_path=root / "echo.log")
    rec.start()
    echo.start()
    try:
        rec.wait_serving(120)
        echo.wait_serving(60)
        yield {
            "recommendation": rec.target,
            "echo": echo.target,
            "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
        }
    finally:
        rec.stop()
        echo.stop()


def test_calibrate_then_validate_against_a_real_service(
    services: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    targets = [f"--target=recommendation={services['recommendation']}"]
    targets.append(f"--target=echo={services['echo']}")
    targets.append(f"--metrics=recommendation={services['metrics']}")
    calibration = tmp_path / "cal.json"
    code = main(
        [
            "capacity",
            "calibrate",
            "--services",
            "recommendation",
            *targets,
            "--concurrencies",
            "1,4,8",
            "--duration",
            "0.6",
            "--warmup",
            "0.2",
            "--out",
            str(calibration),
            "--json",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["provenance"]["measured"] is True
    for key in ("commit", "host", "command", "timestamp"):
        assert printed["provenance"][key]
    rec = printed["services"]["recommendation"]
    assert rec["batching"]["variability"] == "averaged"
    recommend = rec["rpcs"]["Recommend"]
    assert recommend["per_item_ms"] > 0
    assert [row["concurrency"] for row in recommend["load_dependence"]] == [1, 4, 8]
    # The service's own batches per level (--metrics): a lone caller's are of one request,
    # and none holds more requests than there are callers.
    ladder = recommend["load_dependence"]
    assert ladder[0]["batch_size"] == 1.0 and ladder[0]["batch_ms"] > 0
    assert all(1.0 <= row["batch_size"] <= row["concurrency"] for row in ladder)
    # ... and they are the model's batch times, the event loop a queue of its own.
    assert recommend["batch_ms"][0] == [1.0, ladder[0]["batch_ms"]]
    assert rec["batching"]["loop"] == "queue" and rec["batching"]["loop_ms"] > 0
    # The loop's contention is fitted to the open-loop runs up to CONTENTION_FIT_UPTO of the
    # ladder's best, and the measurements keep each pass's rate, seed and p95 of them.
    raw = json.loads(calibration.with_suffix(".measurements.json").read_text())
    fit = raw["recommendation"]["fit"]
    runs = fit["loop_contention_runs"]
    assert len(runs) == sum(f <= CONTENTION_FIT_UPTO for f in OPEN_FRACTIONS)
    assert all(len(r["pass_p95_ms"]) == len(r["rates"]) == len(r["seeds"]) for r in runs)
    assert fit["loop_contention"] in [c["contention"] for c in fit["loop_contention_fit"]]
    # Services not measured come from the base file, so model mode can read the result.
    loaded = load_calibration(calibration)
    assert {"intent", "dispatch", "telemetry"} <= set(loaded.services)
    # ... and so do the recommendation RPCs that were not measured, outside the batcher.
    assert {"SimilarItems", "RecordFeedback"} <= set(loaded.services["recommendation"].rpcs)
    batching = loaded.services["recommendation"].batching
    assert batching is not None and batching.rpcs == ("Recommend",)

    out = tmp_path / "validate"
    code = main(
        [
            "capacity",
            "validate",
            "--services",
            "recommendation",
            *targets,
            "--calibration",
            str(calibration),
            "--rates",
            "20,60",
            "--passes",
            "1",
            "--duration",
            "0.8",
            "--warmup",
            "0.2",
            "--out",
            str(out),
            "--json",
        ]
    )
    # The bounds are the benchmark's business on a quiet machine; here the command must run.
    assert code in (0, 1)
    payload = json.loads(capsys.readouterr().out)
    result = payload["services"]["recommendation"]
    assert [row["rate"] for row in result["rows"]] == [20.0, 60.0]
    for row in result["rows"]:
        assert row["m_throughput"] > 0 and row["p_throughput"] > 0
        assert row["m_p95_ms"] > 0 and row["p_p95_ms"] > 0
        assert row["m_errors"] == 0
        # Real batches beside the model's: at 20-60 calls/s most are of one request.
        assert 1.0 <= row["m_batch_size"] < 2.0 and 1.0 <= row["p_batch_size"] < 2.0
        assert row["m_batch_ms"] > 0 and row["p_batch_ms"] > 0
    for key in ("measured_knee_per_s", "predicted_knee_per_s", "knee_ok", "p95_ok", "passed"):
        assert key in result
    assert payload["passed"] == (code == 0)
    assert json.loads((out / "validate.json").read_text())["services"].keys() == {"recommendation"}
    html = (out / "report.html").read_text()
    assert "<svg" in html and "throughput vs offered rate" in html


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["capacity", "validate", "--rates", "fast"], "--rates"),
        (["capacity", "validate", "--rates", "0,10"], "--rates"),
        (["capacity", "validate", "--duration", "-1"], "--duration"),
        (["capacity", "validate", "--services", "warp-drive"], "--services"),
        (["capacity", "validate", "--target", "recommendation"], "--target"),
        (["capacity", "validate", "--calibration", "/nonexistent.json"], "--calibration"),
        (["capacity", "validate", "--below-knee", "0"], "--below-knee"),
        (["capacity", "validate", "--passes", "0"], "--passes"),
        (["capacity", "calibrate", "--concurrencies", "4"], "--concurrencies"),
        (["capacity", "calibrate", "--workers", "0"], "--workers"),
        (["capacity", "calibrate", "--base", "/nonexistent.json"], "--base"),
        (["capacity", "calibrate", "--metrics", "intent=localhost:9102"], "--metrics"),
        (
            ["capacity", "validate", "--metrics", "intent=http://localhost:9102/metrics"],
            "--metrics",
        ),
    ],
)
def test_bad_flags_name_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert flag in capsys.readouterr().err
