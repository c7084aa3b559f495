"""What calibrate and validate share: the services they can measure, their flags, starting the
real services (or using ``--target`` ones) and the generator's workload for each."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.recommendation.config import RecommendationOptions
from services.runtime.settings import SettingsError
from simulator.capacity.measure import Workload, load_texts

#: Services calibrate/validate measure, with the RPC and its batcher size (the service's
#: default ``max_batch``: Recommend calls, Classify messages).
MEASURABLE: dict[str, tuple[str, int]] = {
    "recommendation": ("Recommend", 64),
    "intent": ("Classify", 32),
}


#: How each measured service's batcher waits for more calls with its default settings, as
#: ``Batching`` has it: (max_wait_ms, grow_to_previous).
BATCH_WAIT: dict[str, tuple[float, bool]] = {
    "recommendation": (RecommendationOptions().batch_window_ms, True),
    "intent": (0.0, False),
}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by calibrate and validate."""
    parser.add_argument(
        "--services",
        default="recommendation,intent",
        help=f"comma-separated services to measure; known: {', '.join(MEASURABLE)}",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes of each started service"
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="measure an already running service instead of starting one (repeatable; "
        "'echo=HOST:PORT' for the baseline)",
    )
    parser.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="the Prometheus endpoint of a --target service (http://HOST:PORT/metrics), so "
        "the results carry its real batch sizes and batch times beside the model's "
        "(repeatable; services this command starts are read without it)",
    )
    parser.add_argument(
        "--log-dir", type=Path, default=None, help="service logs (default: under --out)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")


def parse_services(value: str) -> list[str]:
    """``--services`` as a list; ``SettingsError`` names the flag on an unknown service."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise SettingsError("--services: give at least one service")
    for name in names:
        if name not in MEASURABLE:
            raise SettingsError(
                f"--services: unknown or unmeasurable service {name!r}; "
                f"known: {', '.join(MEASURABLE)}"
            )
    return list(dict.fromkeys(names))


def parse_targets(values: Sequence[str]) -> dict[str, str]:
    """``--target NAME=HOST:PORT`` values as a dict; ``SettingsError`` names the flag."""
    targets = {}
    for value in values:
        name, sep, address = value.partition("=")
        if not sep or not name or ":" not in address:
            raise SettingsError(f"--target: expected NAME=HOST:PORT, got {value!r}")
        if name not in (*MEASURABLE, "echo"):
            raise SettingsError(f"--target: unknown service {name!r}")
        targets[name] = address
    return targets


def parse_metrics(values: Sequence[str], targets: dict[str, str]) -> dict[str, str]:
    """``--metrics NAME=URL`` values as a dict; only for services given by ``--target``."""
    urls = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise SettingsError(f"--metrics: expected NAME=http://HOST:PORT/metrics, got {value!r}")
        if name not in MEASURABLE:
            raise SettingsError(f"--metrics: unknown or unmeasurable service {name!r}")
        if name not in targets:
            raise SettingsError(
                f"--metrics: {name} has no --target (the services started here are read anyway)"
            )
        urls[name] = url
    return urls


def check_number(
    value: float, flag: str, *, minimum: float = 0.0, strict: bool = True, integer: bool = False
) -> None:
    """``SettingsError`` naming ``flag`` when ``value`` is not above (``strict``) or at least
    ``minimum``, or not whole when ``integer``."""
    if math.isnan(value) or (value <= minimum if strict else value < minimum):
        raise SettingsError(f"{flag}: must be {'>' if strict else '>='} {minimum:g}")
    if integer and int(value) != value:
        raise SettingsError(f"{flag}: must be a whole number")


@dataclass
class Running:
    """Where each measured service (and echo) answers, and the workloads to send them."""

    targets: dict[str, str]
    workloads: dict[str, Workload]


def _recommendation_users(data_dir: Path, model_dir: Path | None) -> tuple[str, ...]:
    """Known shopper ids of the served model (personalised ranking, the expensive path)."""
    if model_dir is None:
        root = data_dir / "models" / "recommendation"
        candidates = sorted(root.glob("*/users.json")) if root.is_dir() else []
        if not candidates:
            return ()
        users_file = candidates[-1]
    else:
        users_file = model_dir / "users.json"
    try:
        users = json.loads(users_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    return tuple(str(u) for u in users[:4096])


def workload_for(
    service: str, target: str, data_dir: Path, metrics_url: str | None = None
) -> Workload:
    """The generator's workload for ``service`` at ``target`` (``metrics_url``: the
    service's Prometheus endpoint, for its batch counts)."""
    rpc, _ = MEASURABLE[service]
    if service == "recommendation":
        users = _recommendation_users(data_dir, None)
        return Workload(service, rpc, target, users, k=10, metrics_url=metrics_url)
    return Workload(service, rpc, target, load_texts(), metrics_url=metrics_url)


@contextmanager
def running_services(
    names: Sequence[str],
    targets: dict[str, str],
    *,
    workers: int,
    log_dir: Path,
    config_path: str | None = None,
    log: object = print,
    metrics: dict[str, str] | None = None,
) -> Iterator[Running]:
    """Start the services of ``names`` (and echo) that have no ``--target``, on free ports;
    stop them on exit."""
    from services.cli.serve import load_service_settings
    from services.runtime.process import free_port
    from services.suite import start_suite

    to_start = [n for n in (*names, "echo") if n not in targets]
    urls = dict(metrics or {})
    # The started services serve their metrics, so each measurement also carries the
    # service's own count of batches (``measure.BatchCounts``).
    metrics_ports = {name: free_port() for name in to_start if name != "echo"}
    urls.update({name: f"http://127.0.0.1:{port}/metrics" for name, port in metrics_ports.items()})
    suite = None
    if to_start:
        service_args = {
            name: (
                ["--workers", str(workers), "--metrics-port", str(metrics_ports[name])]
                if name != "echo"
                else []
            )
            for name in to_start
        }
        suite = start_suite(
            to_start,
            log_dir=log_dir,
            config_path=config_path,
            free_ports=True,
            extra_args=["--log-level", "warning"],
            service_args=service_args,
            log=log,  # type: ignore[arg-type]
        )
    try:
        all_targets = {**(suite.targets if suite else {}), **targets}
        data_dir = load_service_settings("recommendation", argparse.Namespace(config=config_path))[
            0
        ].data_dir
        workloads = {
            name: workload_for(name, all_targets[name], data_dir, urls.get(name)) for name in names
        }
        workloads["echo"] = Workload("echo", "Echo", all_targets["echo"])
        yield Running(all_targets, workloads)
    finally:
        if suite is not None:
            suite.stop()
