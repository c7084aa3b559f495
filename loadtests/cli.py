"""``shoptwin loadtest``: Locust headless against the suite (started with ``--up`` or at given
addresses), with a pass/fail verdict against per-RPC SLOs.

Locust runs as child processes (``python -m locust -f loadtests/locustfile.py``): gevent's
monkey-patching then never touches this process, which may itself run gRPC (``--up``).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from services.cli.commands import CommandGroups
from services.runtime.settings import SettingsError

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(flag: str, text: str) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``1h30m``; errors name the flag."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise SettingsError(f"{flag}: expected a duration such as 90s, 5m or 1h30m, got {text!r}")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise SettingsError(f"{flag}: must be positive, got {text!r}")
    return total


def register(groups: CommandGroups) -> None:
    from loadtests.bench import register_bench
    from loadtests.options import WORKLOADS
    from loadtests.shapes import SHAPES

    register_bench(groups.bench)

    parser = groups.top.add_parser(
        "loadtest",
        help="Locust load test with SLO verdicts",
        description="Run Locust headless against the services (started with --up, or at "
        "--target-* addresses), with shoppers, messages, orders and vehicles from the "
        "simulator's behaviour model. Writes CSV and HTML results and exits non-zero when "
        "an SLO (error rate, p95, p99 per RPC) is missed.",
    )
    parser.add_argument(
        "--workload",
        default="suite",
        choices=WORKLOADS,
        help="what the users do (default: suite = journeys, fleets and per-service traffic)",
    )
    parser.add_argument(
        "--shape",
        default="constant",
        help=f"load shape: {', '.join(SHAPES)} (default: constant, open loop)",
    )
    parser.add_argument(
        "--rate", type=float, default=20.0, help="arrivals per second, open loop (peak/base)"
    )
    parser.add_argument("--users", type=int, default=10, help="users, closed loop")
    parser.add_argument(
        "--spawn-rate", type=float, default=100.0, help="users started per second, closed loop"
    )
    parser.add_argument("--duration", default="60s", help="run time, e.g. 60s, 5m (default 60s)")
    parser.add_argument("--steps", type=int, default=4, help="stages of the steps shape")
    parser.add_argument(
        "--scenario",
        default="",
        help="simulator scenario (demo, black-friday, ... or a YAML path): the users' world, "
        "and the curve and peak of the daily and spike shapes (default: the model's defaults)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Locust worker processes on this machine (1: a single process; N > 1: a master "
        "and N workers)",
    )
    parser.add_argument(
        "--remote-workers",
        type=int,
        default=0,
        help="also wait for this many workers from other machines (see docs/loadtests.md)",
    )
    parser.add_argument(
        "--master-bind-host", default="127.0.0.1", help="where the master listens for workers"
    )
    parser.add_argument("--master-port", type=int, default=0, help="master port (0: a free one)")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=1000,
        help="open-loop arrivals in flight per worker before new ones are dropped",
    )
    parser.add_argument(
        "--max-arrivals", type=int, default=0, help="stop after this many arrivals (0: no limit)"
    )
    parser.add_argument(
        "--vehicles", type=int, default=4, help="vehicles of the fleet (fleet and suite)"
    )
    parser.add_argument(
        "--think-scale",
        type=float,
        default=0.0,
        help="shoppers think this times the session model's think time (default 0)",
    )
    parser.add_argument(
        "--fleet-speedup",
        type=float,
        default=10.0,
        help="vans drive this many times faster than real time (default 10)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline of each call, s")
    parser.add_argument(
        "--payload-bytes", type=int, default=64, help="echo request payload size (echo)"
    )
    for service in ("recommendation", "intent", "dispatch", "telemetry", "echo"):
        parser.add_argument(
            f"--target-{service}",
            default=None,
            metavar="HOST:PORT",
            help=f"{service} service address (default: its default port on 127.0.0.1)",
        )
    parser.add_argument(
        "--up",
        action="store_true",
        help="start the services the workload needs on free ports, and stop them after",
    )
    parser.add_argument("--slo", type=Path, default=None, help="SLO YAML file (default: packaged)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results directory (default: .shoptwin/loadtest/<time>)",
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="DIR",
        help="dry run: send nothing, write every call the users would make to DIR",
    )
    parser.add_argument(
        "--run-tag",
        default=None,
        help="prefix of every id the run creates (default: lt-<time>; fixed with --record)",
    )
    parser.add_argument(
        "--clock-base",
        type=float,
        default=None,
        help="epoch seconds simulated times count from (default: now; fixed with --record)",
    )
    parser.add_argument(
        "--require-all-rpcs",
        action="store_true",
        help="fail unless every RPC of every service the workload calls got requests (CI smoke)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from loadtests.runner import LoadTestRequest, run_load_test

    request = LoadTestRequest.from_args(args)
    return run_load_test(request)


def default_out_dir() -> Path:
    return Path(".shoptwin/loadtest") / time.strftime("%Y%m%d-%H%M%S")
