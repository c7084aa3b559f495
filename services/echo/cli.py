"""``shoptwin bench echo``: the bare gRPC round trip of this machine, the baseline of every
other benchmark."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from services.cli.commands import CommandGroups, add_json_flag
from services.runtime.settings import SettingsError


def parse_int_list(flag: str, text: str, *, low: int = 1) -> list[int]:
    """A comma-separated list of integers >= ``low``; errors name the flag."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SettingsError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v < low for v in values):
        raise SettingsError(f"{flag}: expected integers >= {low}, got {text!r}")
    return values


def register(groups: CommandGroups) -> None:
    parser = groups.bench.add_parser(
        "echo",
        help="bare echo RPC throughput and latency",
        description="Closed-loop echo RPCs against `shoptwin serve echo` in a child process.",
    )
    parser.add_argument(
        "--concurrency",
        default="1,8,32,128",
        help="comma-separated in-flight call counts (default: 1,8,32,128)",
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per level")
    parser.add_argument("--payload-bytes", type=int, default=64, help="request payload size")
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from services.echo.bench import measure_echo, start_echo_process
    from services.runtime.bench import render_table, run_metadata, write_json

    concurrencies = parse_int_list("--concurrency", args.concurrency)
    if args.duration <= 0:
        raise SettingsError("--duration: must be positive")
    proc = start_echo_process()
    try:
        stats = asyncio.run(
            measure_echo(
                proc.target,
                concurrencies,
                duration_s=args.duration,
                payload_bytes=args.payload_bytes,
            )
        )
    finally:
        proc.stop()
    rows = [s.as_dict() for s in stats]
    payload = {"meta": run_metadata(vars(args) | {"handler": None}), "echo": rows}
    if args.json_path == Path("-"):
        json.dump(payload, sys.stdout, indent=2)
        print()
    else:
        print(render_table(rows, ["concurrency", "qps", "p50_ms", "p99_ms", "errors"]))
        if args.json_path:
            write_json(args.json_path, payload)
    return 0
