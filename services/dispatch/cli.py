"""Commands of the dispatch service: ``shoptwin bench dispatch`` (Solomon instances against
best-known distances) and ``shoptwin bench dispatch-live`` (SubmitOrder latency while the
background re-optimisation runs, and how much that re-optimisation improves cost)."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.cli.commands import CommandGroups, add_json_flag
from services.runtime.settings import SettingsError


def register(groups: CommandGroups) -> None:
    """Add this service's subcommands to the command groups."""
    parser = groups.bench.add_parser(
        "dispatch",
        help="VRPTW solver on Solomon instances against best-known distances",
        description=(
            "Solve each Solomon instance with the dispatch solver (PyVRP) and compare the exact "
            "Euclidean distance with the best-known distance (NAME_distance keys)."
        ),
    )
    parser.add_argument("--instances", type=Path, required=True, help="directory of *.txt files")
    parser.add_argument("--bks", type=Path, required=True, help="best-known solutions JSON")
    parser.add_argument("--time-limit", type=float, default=2.0, help="seconds per instance")
    parser.add_argument("--seed", type=int, default=1, help="solver seed")
    parser.add_argument(
        "--only", default="", help="comma-separated instance names (default: every file)"
    )
    parser.add_argument(
        "--mode",
        default="auto",
        choices=("auto", "required", "optional"),
        help="how orders enter the search (see services/dispatch/solver.py)",
    )
    parser.add_argument(
        "--clock",
        default="wall",
        choices=("wall", "cpu"),
        help="count --time-limit in wall-clock seconds (default) or in the search's CPU "
        "seconds (the effort of a quiet machine on a shared one)",
    )
    add_json_flag(parser)
    parser.set_defaults(handler=run_solomon)

    live = groups.bench.add_parser(
        "dispatch-live",
        help="SubmitOrder latency during background re-optimisation, and its cost gain",
        description=(
            "Runs `shoptwin serve dispatch` in a child process twice with the same seeded load "
            "(background passes off, then on): configures a fleet, keeps --orders orders open "
            "(submit and cancel) at --rate per second, and reports SubmitOrder latency "
            "percentiles with and without passes beside the bare echo RPC, and the plan "
            "distance of cheapest insertion alone vs after the background passes."
        ),
    )
    live.add_argument("--orders", type=int, default=100, help="open orders to keep")
    live.add_argument("--vehicles", type=int, default=10, help="vehicles in the fleet")
    live.add_argument("--duration", type=float, default=20.0, help="seconds of steady load")
    live.add_argument("--rate", type=float, default=20.0, help="SubmitOrder calls per second")
    live.add_argument(
        "--reopt-time-limit", type=float, default=1.0, help="seconds per background pass"
    )
    live.add_argument(
        "--reopt-interval",
        type=float,
        default=0.0,
        help="pause between background passes (0: back to back, the worst case for latency)",
    )
    live.add_argument(
        "--solver-niceness", type=int, default=10, help="passed to the service (0..19)"
    )
    live.add_argument("--seed", type=int, default=7, help="seed of the order generator")
    add_json_flag(live)
    live.set_defaults(handler=run_live)


def run_solomon(args: argparse.Namespace) -> int:
    import json
    import sys

    from services.dispatch.solomon import load_best_known, read_solomon, run_instance
    from services.dispatch.solver import SolveOptions
    from services.runtime.bench import render_table, run_metadata, write_json

    if args.time_limit <= 0:
        raise SettingsError("--time-limit: must be positive")
    if not args.instances.is_dir():
        raise SettingsError(f"--instances: {args.instances} is not a directory")
    if not args.bks.is_file():
        raise SettingsError(f"--bks: {args.bks} is not a file")
    files = sorted(args.instances.glob("*.txt"))
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        files = [f for f in files if f.stem in wanted]
    if not files:
        raise SettingsError("--instances: no matching *.txt instance files")
    best_known = load_best_known(args.bks)
    options = SolveOptions(
        time_limit_s=args.time_limit, seed=args.seed, mode=args.mode, clock=args.clock
    )
    to_stdout = args.json_path == Path("-")
    rows = []
    for path in files:
        instance = read_solomon(path)
        result = run_instance(instance, best_known.get(instance.name), options)
        rows.append(result.as_dict())
        if not to_stdout:
            print(
                f"{result.name}: cost {result.cost:.2f} gap "
                f"{'n/a' if result.gap_pct is None else f'{result.gap_pct:.2f} %'} "
                f"vehicles {result.vehicles} time {result.seconds:.2f}s "
                f"(cpu {result.cpu_seconds:.2f}s) "
                f"feasible {result.feasible}",
                flush=True,
            )
    gaps = [r["gap_pct"] for r in rows if r["gap_pct"] is not None]
    summary = {
        "instances": len(rows),
        "feasible": sum(1 for r in rows if r["feasible"]),
        "mean_gap_pct": round(sum(gaps) / len(gaps), 3) if gaps else None,  # type: ignore[arg-type]
        "max_gap_pct": max(gaps) if gaps else None,  # type: ignore[type-var]
        "mean_time_s": round(sum(r["time_s"] for r in rows) / len(rows), 2),  # type: ignore[misc]
        "mean_cpu_s": round(sum(r["cpu_s"] for r in rows) / len(rows), 2),  # type: ignore[misc]
        "time_limit_s": args.time_limit,
        "clock": args.clock,
    }
    payload = {
        "meta": run_metadata(vars(args) | {"handler": None}),
        "summary": summary,
        "rows": rows,
    }
    if to_stdout:
        json.dump(payload, sys.stdout, indent=2)
        print()
    else:
        columns = ["instance", "cost", "bks", "gap_pct", "vehicles", "time_s", "cpu_s", "feasible"]
        print(render_table(rows, columns))
        print(
            f"mean gap {summary['mean_gap_pct']} %  max gap {summary['max_gap_pct']} %  "
            f"feasible {summary['feasible']}/{summary['instances']}  "
            f"mean time {summary['mean_time_s']} s (cpu {summary['mean_cpu_s']} s)"
        )
        if args.json_path:
            write_json(args.json_path, payload)
    return 0


def run_live(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import sys

    from services.dispatch.bench import LiveBenchConfig, run_live_bench
    from services.runtime.bench import run_metadata, write_json

    if args.orders < 1 or args.vehicles < 1:
        raise SettingsError("--orders/--vehicles: must be at least 1")
    if args.duration <= 0 or args.rate <= 0:
        raise SettingsError("--duration/--rate: must be positive")
    config = LiveBenchConfig(
        orders=args.orders,
        vehicles=args.vehicles,
        duration_s=args.duration,
        rate_per_s=args.rate,
        reopt_time_limit_s=args.reopt_time_limit,
        reopt_interval_s=args.reopt_interval,
        solver_niceness=args.solver_niceness,
        seed=args.seed,
    )
    report = asyncio.run(run_live_bench(config))
    payload = {"meta": run_metadata(vars(args) | {"handler": None}), **report}
    if args.json_path == Path("-"):
        json.dump(payload, sys.stdout, indent=2)
        print()
    else:
        from services.dispatch.bench import render_live_report

        print(render_live_report(report))
        if args.json_path:
            write_json(args.json_path, payload)
    return 0
