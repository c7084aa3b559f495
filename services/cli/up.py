"""``shoptwin up``: start the four services as local processes, wait until each is SERVING,
print their addresses, and stop them all cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from services.cli.commands import CommandGroups
from services.cli.serve import load_service_settings
from services.registry import PRODUCT_SERVICES, get_definition
from services.runtime.bench import render_table
from services.runtime.client import ChannelOptions
from services.runtime.config import ServerSettings
from services.runtime.settings import SettingsError
from services.runtime.tls import ClientTLS
from services.suite import start_suite


def register(groups: CommandGroups) -> None:
    parser = groups.top.add_parser(
        "up",
        help="start all four services locally",
        description="Start the services as local processes, wait until each reports SERVING, "
        "print their addresses, and stop them all on Ctrl-C or SIGTERM. Each service reads its "
        "settings from --config and SHOPTWIN_* variables as `shoptwin serve` does.",
    )
    parser.add_argument(
        "--services",
        default=",".join(d.name for d in PRODUCT_SERVICES),
        help="comma-separated services to start (default: all four)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for every service to be SERVING (default: 120)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=Path(".shoptwin/logs"),
        help="where each service writes its JSON log (default: .shoptwin/logs)",
    )
    parser.add_argument(
        "--no-prepare",
        dest="prepare",
        action="store_false",
        help="do not build missing default models before starting (services without a model "
        "answer UNAVAILABLE until one is loaded)",
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=None,
        help="CA that signed the services' certificates (when TLS is on)",
    )
    parser.add_argument(
        "--tls-client-cert",
        type=Path,
        default=None,
        help="client certificate for health checks (when mTLS is on)",
    )
    parser.add_argument(
        "--tls-client-key",
        type=Path,
        default=None,
        help="client key for health checks (when mTLS is on)",
    )
    parser.set_defaults(handler=run)


def parse_services(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise SettingsError("--services: name at least one service")
    for name in names:
        try:
            get_definition(name)
        except KeyError as exc:
            raise SettingsError(f"--services: {exc.args[0]}") from None
    return names


def probe_options(args: argparse.Namespace, settings: ServerSettings) -> ChannelOptions:
    if not settings.tls_enabled:
        return ChannelOptions(retry=None)
    if args.tls_ca is None:
        raise SettingsError("--tls-ca: the services use TLS; name the CA that signed them")
    return ChannelOptions(
        retry=None,
        tls=ClientTLS(
            ca_cert=args.tls_ca,
            client_cert=args.tls_client_cert,
            client_key=args.tls_client_key,
        ),
    )


def run(args: argparse.Namespace) -> int:
    names = parse_services(args.services)
    settings_of: dict[str, ServerSettings] = {}
    for name in names:
        # Only --config is passed down: per-service flags do not exist at this level.
        settings, _ = load_service_settings(name, argparse.Namespace(config=args.config))
        if settings.port == 0:
            raise SettingsError(f"{name} port: `up` needs a fixed port")
        settings_of[name] = settings
    stopping = threading.Event()

    def request_stop(_signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    started = time.monotonic()
    try:
        suite = start_suite(
            names,
            log_dir=args.log_dir,
            config_path=args.config,
            ready_timeout_s=args.ready_timeout,
            probe_options=lambda settings: probe_options(args, settings),
            prepare_models=args.prepare,
            log=lambda line: print(line, flush=True),
        )
    except (TimeoutError, RuntimeError) as exc:
        print(f"shoptwin up: {exc}; see the logs in {args.log_dir}", file=sys.stderr)
        return 1
    processes = suite.processes

    rows = [
        {
            "service": proc.service,
            "address": proc.target,
            "metrics": f"http://{proc.host}:{settings_of[proc.service].metrics_port}/metrics"
            if settings_of[proc.service].metrics_port
            else "off",
            "log": str(args.log_dir / f"{proc.service}.log"),
        }
        for proc in processes
    ]
    print(render_table(rows, ["service", "address", "metrics", "log"]))
    print(
        f"all {len(processes)} services SERVING after {time.monotonic() - started:.1f} s; "
        "Ctrl-C or SIGTERM stops them",
        flush=True,
    )
    failed: list[str] = []
    while not stopping.wait(0.5):
        failed = [p.service for p in processes if p.process and p.process.poll() is not None]
        if failed:
            print(f"shoptwin up: {', '.join(failed)} exited; stopping the rest", file=sys.stderr)
            break
    codes = suite.stop(timeout_s=max(s.grace_s for s in settings_of.values()) + 10)
    bad = {p.service: c for p, c in zip(processes, codes, strict=True) if c != 0}
    if bad:
        print(f"shoptwin up: non-zero exit codes: {bad}", file=sys.stderr)
        return 1
    print("all services stopped", flush=True)
    return 1 if failed else 0
