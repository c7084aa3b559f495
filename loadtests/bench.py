"""``shoptwin bench locust``: how many echo RPCs per second one Locust worker process drives
through the gRPC user, beside the bare asyncio echo client measured in the same run (so the
ratio survives a noisy machine)."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from services.runtime.settings import SettingsError


def locust_echo_rps(
    target: str, *, users: int, workers: int, duration_s: float, out_dir: Path
) -> dict[str, Any]:
    """Run the echo user closed loop; total and per-worker throughput from Locust's CSV."""
    from loadtests.options import LoadTestOptions
    from loadtests.runner import LoadTestRequest, run_locust
    from loadtests.slo import read_locust_stats_csv

    options = LoadTestOptions(
        targets={"echo": target},
        workload="echo",
        shape="closed",
        users=users,
        spawn_rate=float(users),
        duration_s=duration_s,
        lanes=workers,
    )
    request = LoadTestRequest(options=options, workers=workers, out_dir=out_dir)
    code = run_locust(request)
    if code != 0:
        raise RuntimeError(f"Locust exited with code {code}; see {out_dir}")
    stats = {s.name: s for s in read_locust_stats_csv(out_dir / "locust_stats.csv")}
    echo = stats["EchoService/Echo"]
    cpu = [json.loads(p.read_text(encoding="utf-8")) for p in out_dir.glob("cpu-*.json")]
    worker_cpu = [c for c in cpu if c["role"] != "master"]
    cpu_s = sum(c["cpu_s"] for c in worker_cpu)
    wall_s = max((c["wall_s"] for c in worker_cpu), default=0.0)
    # Locust's CSV has the run's mean rate; recompute it from the count and the duration
    # (users start within a fraction of a second at this spawn rate).
    rps = echo.requests / duration_s
    return {
        "client": f"locust echo user ({workers} worker{'s' if workers > 1 else ''})",
        "users": users,
        "requests": echo.requests,
        "failures": echo.failures,
        "rps": round(rps, 1),
        "rps_per_worker": round(rps / workers, 1),
        "p95_ms": echo.p95_ms,
        "p99_ms": echo.p99_ms,
        # Share of a core each worker had: below 1, the machine (or the server) held it back.
        "worker_cpu_share": round(cpu_s / wall_s / workers, 2) if wall_s else None,
        # Requests per CPU second of the workers: what one worker does with a core to itself.
        "rps_per_worker_core": round(echo.requests / cpu_s, 1) if cpu_s else None,
    }


def run(args: argparse.Namespace) -> int:
    from services.echo.bench import measure_echo, start_echo_process
    from services.runtime.bench import render_table, run_metadata, write_json

    if args.duration <= 0:
        raise SettingsError("--duration: must be positive")
    if args.users < 1:
        raise SettingsError("--users: need at least 1")
    if args.workers < 1:
        raise SettingsError("--workers: need at least 1")
    if args.server_workers < 1:
        raise SettingsError("--server-workers: need at least 1")
    proc = start_echo_process()
    if args.server_workers > 1:
        proc.stop()
        from services.runtime.process import ServiceProcess, free_port

        proc = ServiceProcess(
            "echo",
            free_port(),
            extra_args=["--metrics-port", "0", "--log-level", "warning", "--workers",
                        str(args.server_workers)],
        )  # fmt: skip
        proc.start()
        proc.wait_serving(60)
    rows: list[dict[str, Any]] = []
    try:
        baseline = asyncio.run(measure_echo(proc.target, [args.users], duration_s=args.duration))
        rows.append(
            {
                "client": "bare grpc.aio echo client",
                "users": args.users,
                "requests": baseline[0].requests,
                "failures": baseline[0].errors,
                "rps": baseline[0].qps,
                "rps_per_worker": baseline[0].qps,
                "p95_ms": None,
                "p99_ms": baseline[0].p99_ms,
            }
        )
        with tempfile.TemporaryDirectory(prefix="locust-bench-") as tmp:
            for workers in sorted({1, args.workers}):
                rows.append(
                    locust_echo_rps(
                        proc.target,
                        users=args.users,
                        workers=workers,
                        duration_s=args.duration,
                        out_dir=Path(tmp) / f"w{workers}",
                    )
                )
    finally:
        proc.stop()
    for row in rows[1:]:
        row["ratio_to_bare"] = round(row["rps"] / rows[0]["rps"], 3) if rows[0]["rps"] else None
    columns = [
        "client",
        "users",
        "requests",
        "rps",
        "rps_per_worker",
        "worker_cpu_share",
        "rps_per_worker_core",
        "p99_ms",
    ]
    print(render_table(rows, [*columns, "ratio_to_bare"]))
    if args.json_path:
        write_json(
            args.json_path,
            {"meta": run_metadata(vars(args) | {"handler": None}), "rows": rows},
        )
    return 0


def register_bench(bench: Any) -> None:
    parser = bench.add_parser(
        "locust",
        help="Locust gRPC user throughput against the bare echo service",
        description="Echo RPCs per second that one Locust worker process drives through the "
        "gRPC user (closed loop), beside the bare grpc.aio echo client in the same run.",
    )
    parser.add_argument("--users", type=int, default=32, help="concurrent users (default 32)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per client")
    parser.add_argument(
        "--workers", type=int, default=1, help="also measure with N Locust workers (default 1)"
    )
    parser.add_argument(
        "--server-workers", type=int, default=1, help="echo server processes (default 1)"
    )
    parser.add_argument("--json", dest="json_path", type=Path, default=None, help="write JSON")
    parser.set_defaults(handler=run)
