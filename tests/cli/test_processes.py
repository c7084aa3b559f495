"""`shoptwin serve` and `shoptwin up` as real processes: SERVING, SIGTERM, exit code 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from grpc_health.v1 import health_pb2

from services.registry import PRODUCT_SERVICES
from services.runtime.process import ServiceProcess, free_port, health_status, wait_serving


def _env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(root), str(root / "protos"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "echo.log"
    proc = ServiceProcess(
        "echo", free_port(), extra_args=["--metrics-port", "0"], log_path=log, env=_env()
    )
    proc.start()
    proc.wait_serving(60)
    assert proc.stop() == 0
    text = log.read_text()
    assert '"event": "stopped"' in text
    assert "Traceback" not in text


def test_workers_share_one_port_and_sum_metrics(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    log = tmp_path / "workers.log"
    proc = ServiceProcess(
        "echo",
        port,
        extra_args=["--workers", "2", "--metrics-port", str(metrics_port)],
        log_path=log,
        env=_env(),
    )
    proc.start()
    try:
        proc.wait_serving(60)
        # Both workers bind: the log holds two "serving" lines for the same port.
        deadline = time.monotonic() + 30
        while log.read_text().count('"event": "serving"') < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert log.read_text().count('"event": "serving"') == 2
        for _ in range(20):
            assert health_status(proc.target) == health_pb2.HealthCheckResponse.SERVING
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        checks = [
            line
            for line in body.splitlines()
            if line.startswith("shoptwin_rpc_requests_total") and 'method="Check"' in line
        ]
        assert checks and float(checks[0].split()[-1]) >= 20
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in log.read_text()


def test_up_starts_all_four_and_stops_them_on_sigterm(tmp_path: Path) -> None:
    ports = {d.name: free_port() for d in PRODUCT_SERVICES}
    config = tmp_path / "shoptwin.toml"
    lines = [f'[defaults]\ndata_dir = "{tmp_path / "data"}"\nmetrics_port = 0\n']
    lines += [f"[{name}]\nport = {port}\n" for name, port in ports.items()]
    config.write_text("\n".join(lines))
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "--config",
            str(config),
            "up",
            "--log-dir",
            str(tmp_path / "logs"),
            # Lifecycle only: building default models is each service's own test.
            "--no-prepare",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert up.stdout is not None
    out = ""
    try:
        # `up` prints the address table, then this line, once every service is SERVING.
        for line in up.stdout:
            out += line
            if "services SERVING after" in line:
                break
        assert "all 4 services SERVING" in out, up.stderr.read() if up.stderr else ""
        for port in ports.values():
            wait_serving(f"127.0.0.1:{port}", timeout_s=5)
    finally:
        up.send_signal(signal.SIGTERM)
        rest, err = up.communicate(timeout=60)
        out += rest
    assert up.returncode == 0, err
    for name, port in ports.items():
        assert f"127.0.0.1:{port}" in out
        assert health_status(f"127.0.0.1:{port}", timeout_s=0.5) is None
        log = (tmp_path / "logs" / f"{name}.log").read_text()
        assert "Traceback" not in log
    assert "all services stopped" in out
    assert "Traceback" not in err
