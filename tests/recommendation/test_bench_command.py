"""``shoptwin bench recommendation`` end to end on a small model: real servers, real calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_recommendation_reports_both_services_and_the_same_rate_echo(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "protos")]))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "bench",
            "recommendation",
            "--items",
            "3000",
            "--users",
            "300",
            "--concurrency",
            "1,4",
            "--duration",
            "0.5",
            "--workdir",
            str(tmp_path),
            "--json",
            "-",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert [level["concurrency"] for level in report["levels"]] == [1, 4]
    assert all(level["errors"] == 0 and level["recommend_qps"] > 0 for level in report["levels"])
    assert report["ranking_check"]["recall_at_k_vs_exact"] == 1.0
    half, echo = report["half_max_open_loop"], report["half_max_echo_open_loop"]
    assert half["errors"] == 0 and half["requests"] > 0
    # The echo baseline runs at the same arrival rate as Recommend's half-maximum run.
    assert echo["errors"] == 0 and echo["requests"] > 0
    assert abs(echo["qps"] - half["qps"]) <= 0.2 * half["qps"]
