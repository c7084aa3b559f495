"""Commands of the telemetry service: ``shoptwin bench telemetry``."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.cli.commands import CommandGroups, add_json_flag
from services.runtime.settings import SettingsError

#: The readings/s bar of the issue (TimescaleDB does about 90 k rows/s in TSBS with 8 workers).
TARGET_READINGS_PER_S = 100_000


def register(groups: CommandGroups) -> None:
    parser = groups.bench.add_parser(
        "telemetry",
        help="readings/s durably acknowledged over gRPC, ack latency",
        description="Stream pre-serialized batches to `shoptwin serve telemetry` in a child "
        "process over several Upload streams; report readings/s acknowledged after commit and "
        "ack latency, beside an echo RPC of the same payload size and bare SQLite inserts "
        "measured in the same run.",
    )
    parser.add_argument("--devices", type=int, default=1000, help="devices (default: 1000)")
    parser.add_argument(
        "--readings", type=int, default=1_000_000, help="readings in all (default: 1,000,000)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=5000, help="readings per batch, 1..5000 (default 5000)"
    )
    parser.add_argument("--streams", type=int, default=4, help="Upload streams (default 4)")
    parser.add_argument(
        "--window", type=int, default=2, help="unacknowledged batches per stream (default 2)"
    )
    parser.add_argument(
        "--synchronous",
        choices=("normal", "full"),
        default="normal",
        help="SQLite synchronous mode of the server (default: normal)",
    )
    parser.add_argument(
        "--no-alerts",
        action="store_true",
        help="run the server without alert rules (to see what evaluating them costs)",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed of the workload")
    parser.add_argument(
        "--skip-baselines", action="store_true", help="measure the service only (quicker)"
    )
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import sys
    import tempfile

    from services.echo.bench import measure_echo, start_echo_process
    from services.runtime.bench import render_table, run_metadata, write_json
    from services.telemetry.bench import (
        count_stored,
        make_workload,
        sqlite_baseline,
        start_server,
        upload,
    )

    if not 1 <= args.batch_size <= 5000:
        raise SettingsError("--batch-size: must be in 1..5000")
    for flag, value in (
        ("--devices", args.devices),
        ("--readings", args.readings),
        ("--streams", args.streams),
        ("--window", args.window),
    ):
        if value < 1:
            raise SettingsError(f"{flag}: must be at least 1")
    quiet = args.json_path == Path("-")

    def say(text: str) -> None:
        print(text, file=sys.stderr if quiet else sys.stdout, flush=True)

    say(f"generating {args.readings:,} readings of {args.devices} devices ...")
    workload = make_workload(args.devices, args.readings, args.batch_size, args.streams, args.seed)
    commit_readings = 50_000
    with tempfile.TemporaryDirectory(prefix="shoptwin-bench-telemetry-") as tmp:
        database = Path(tmp) / "telemetry.sqlite3"
        proc = start_server(
            database, args.synchronous, ["--no-alerts-enabled"] if args.no_alerts else []
        )
        try:
            say("streaming ...")
            assert proc.process is not None
            result = asyncio.run(upload(proc.target, workload, args.window, proc.process.pid))
        finally:
            proc.stop()
        stored_in_db = count_stored(database)
    rows: list[dict[str, object]] = [
        {
            "measure": "telemetry Upload (acked after commit)",
            "readings_per_s": round(result.readings_per_s),
            "ratio": 1.0,
            "p50_ms": result.latency.p50_ms,
            "p99_ms": result.latency.p99_ms,
        }
    ]
    baselines: dict[str, float] = {}
    if not args.skip_baselines:
        say("baseline: echo RPC with a batch-sized payload ...")
        echo = start_echo_process()
        try:
            echo_stats = asyncio.run(
                measure_echo(
                    echo.target,
                    [args.streams * args.window],
                    duration_s=3.0,
                    payload_bytes=int(workload.batch_bytes),
                )
            )[0]
        finally:
            echo.stop()
        baselines["echo_readings_per_s"] = echo_stats.qps * args.batch_size
        rows.append(
            {
                "measure": f"echo RPC, {int(workload.batch_bytes)} B payload (transport only)",
                "readings_per_s": round(baselines["echo_readings_per_s"]),
                "ratio": round(result.readings_per_s / baselines["echo_readings_per_s"], 3),
                "p50_ms": echo_stats.p50_ms,
                "p99_ms": echo_stats.p99_ms,
            }
        )
        say("baseline: bare SQLite executemany ...")
        baselines["sqlite_readings_per_s"] = sqlite_baseline(
            workload, commit_readings, args.synchronous
        )
        rows.append(
            {
                "measure": "bare SQLite executemany, same rows (storage only)",
                "readings_per_s": round(baselines["sqlite_readings_per_s"]),
                "ratio": round(result.readings_per_s / baselines["sqlite_readings_per_s"], 3),
                "p50_ms": "",
                "p99_ms": "",
            }
        )
    summary = {
        "readings_sent": workload.readings,
        "readings_acked": result.readings_acked,
        "stored_acks": result.stored,
        "duplicate_acks": result.duplicates,
        "rejected": result.rejected,
        "stored_in_database": stored_in_db,
        "seconds": round(result.seconds, 3),
        "readings_per_s": round(result.readings_per_s),
        "target_readings_per_s": TARGET_READINGS_PER_S,
        "meets_target": result.readings_per_s >= TARGET_READINGS_PER_S,
        "server_cpu_us_per_reading": round(result.server_cpu_s / workload.readings * 1e6, 2),
        "client_cpu_us_per_reading": round(result.client_cpu_s / workload.readings * 1e6, 2),
        "server_event_loop_cpu_us_per_reading": round(
            result.server_main_thread_cpu_s / workload.readings * 1e6, 2
        ),
        "server_writer_thread_cpu_us_per_reading": round(
            result.server_busiest_other_thread_cpu_s / workload.readings * 1e6, 2
        ),
        "batch_size": args.batch_size,
        "batch_bytes": round(workload.batch_bytes),
        "ack_latency": result.latency.as_dict(),
    }
    payload = {
        "meta": run_metadata(vars(args) | {"handler": None}),
        "telemetry": summary,
        "baselines": baselines,
        "table": rows,
    }
    if quiet:
        json.dump(payload, sys.stdout, indent=2)
        print()
    else:
        print(render_table(rows, ["measure", "readings_per_s", "ratio", "p50_ms", "p99_ms"]))
        print(
            f"sent {workload.readings:,}, acked {result.readings_acked:,}, "
            f"stored in database {stored_in_db:,}; ratio = telemetry / baseline "
            f"(ratio column); target {TARGET_READINGS_PER_S:,}/s: "
            f"{'met' if summary['meets_target'] else 'NOT met'}"
        )
        print(
            f"CPU per reading: server {summary['server_cpu_us_per_reading']} us (event-loop "
            f"thread {summary['server_event_loop_cpu_us_per_reading']} us, writer thread "
            f"{summary['server_writer_thread_cpu_us_per_reading']} us), client "
            f"{summary['client_cpu_us_per_reading']} us; wall {result.seconds:.2f} s; "
            f"ack latency p50 {result.latency.p50_ms} ms, p99 {result.latency.p99_ms} ms"
        )
        if args.json_path:
            write_json(args.json_path, payload)
    return 0 if result.readings_acked == workload.readings == stored_in_db else 1
