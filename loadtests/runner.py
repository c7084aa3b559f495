"""Runs a load test for ``shoptwin loadtest``: validates the options, starts the services when
asked, runs Locust headless as child processes (one, or a master and N workers), then reads
Locust's CSV results and gives the SLO verdict. Never imports Locust or gevent itself."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.options import WORKLOAD_SERVICES, WORKLOADS, LoadTestOptions
from loadtests.shapes import SHAPES, build_shape
from loadtests.slo import Check, RpcStats, evaluate, load_slo, read_locust_stats_csv
from loadtests.targets import SERVICES
from services.runtime.settings import SettingsError

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")

#: Exit codes: 0 every SLO met; 1 an SLO missed (or an RPC not exercised); 3 Locust failed.
EXIT_SLO_MISSED = 1
EXIT_LOCUST_FAILED = 3


@dataclass(frozen=True)
class LoadTestRequest:
    """A validated ``shoptwin loadtest`` invocation."""

    options: LoadTestOptions
    workers: int = 1
    remote_workers: int = 0
    master_bind_host: str = "127.0.0.1"
    master_port: int = 0
    up: bool = False
    slo_path: Path | None = None
    out_dir: Path = Path(".shoptwin/loadtest")
    require_all_rpcs: bool = False
    config: str | None = None
    #: Extra environment of the Locust processes (tests).
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LoadTestRequest:
        """Validate parsed arguments; a bad one raises ``SettingsError`` naming it."""
        from loadtests.cli import default_out_dir, parse_duration

        if args.shape not in SHAPES:
            raise SettingsError(
                f"--shape: unknown shape {args.shape!r}; known: {', '.join(SHAPES)}"
            )
        if args.workload not in WORKLOADS:
            raise SettingsError(f"--workload: unknown workload {args.workload!r}")
        duration_s = parse_duration("--duration", str(args.duration))
        _positive_int("--workers", args.workers, low=1)
        _positive_int("--remote-workers", args.remote_workers, low=0)
        _positive_int("--max-in-flight", args.max_in_flight, low=1)
        _positive_int("--max-arrivals", args.max_arrivals, low=0)
        _positive_int("--vehicles", args.vehicles, low=1)
        _positive_int("--payload-bytes", args.payload_bytes, low=0)
        if not 0 <= args.master_port <= 65535:
            raise SettingsError(f"--master-port: expected 0..65535, got {args.master_port}")
        if not (args.timeout > 0 and math.isfinite(args.timeout)):
            raise SettingsError(
                f"--timeout: must be a positive number of seconds, got {args.timeout}"
            )
        if not (args.think_scale >= 0 and math.isfinite(args.think_scale)):
            raise SettingsError(f"--think-scale: expected a number >= 0, got {args.think_scale}")
        if not (args.fleet_speedup >= 1 and math.isfinite(args.fleet_speedup)):
            raise SettingsError(
                f"--fleet-speedup: expected a number >= 1, got {args.fleet_speedup}"
            )
        if args.remote_workers and args.master_port == 0:
            raise SettingsError("--master-port: remote workers need a fixed master port")
        if args.remote_workers and args.master_bind_host in ("127.0.0.1", "localhost", "::1"):
            raise SettingsError(
                "--master-bind-host: remote workers cannot reach a loopback address; "
                "give 0.0.0.0 or this machine's address"
            )
        if args.record is not None and args.up:
            raise SettingsError("--record: a dry run sends nothing; leave out --up")
        if args.slo is not None:
            load_slo(args.slo)  # fail now, not after the run
        targets: dict[str, str] = {}
        for service in WORKLOAD_SERVICES[args.workload]:
            flag = f"--target-{service}"
            address = getattr(args, f"target_{service}", None)
            if address is not None:
                if args.up:
                    raise SettingsError(f"{flag}: --up starts its own services; leave out {flag}")
                targets[service] = _check_target(flag, address)
            else:
                from services.registry import get_definition

                targets[service] = f"127.0.0.1:{get_definition(service).default_port}"
        recording = args.record is not None
        now = time.time()
        options = LoadTestOptions(
            targets=targets,
            workload=args.workload,
            shape=args.shape,
            rate=args.rate,
            users=args.users,
            spawn_rate=args.spawn_rate,
            duration_s=duration_s,
            steps=args.steps,
            scenario=args.scenario,
            seed=args.seed,
            lanes=args.workers + args.remote_workers,
            max_in_flight=args.max_in_flight,
            max_arrivals=args.max_arrivals,
            vehicles=args.vehicles,
            timeout_s=args.timeout,
            run_tag=args.run_tag or ("lt" if recording else f"lt-{int(now * 1000):x}"),
            clock_base_s=args.clock_base
            if args.clock_base is not None
            else (1_700_000_000.0 if recording else now),
            record_dir=str(args.record.resolve()) if recording else "",
            # Recorded calls take no time: nothing to wait for after the last arrival.
            drain_s=0.2 if recording else LoadTestOptions.drain_s,
            echo_payload_bytes=args.payload_bytes,
            think_scale=args.think_scale,
            fleet_speedup=args.fleet_speedup,
        )
        build_shape(options)  # validates --rate, --users, --steps, --scenario
        return cls(
            options=options,
            workers=args.workers,
            remote_workers=args.remote_workers,
            master_bind_host=args.master_bind_host,
            master_port=args.master_port,
            up=args.up,
            slo_path=args.slo,
            out_dir=args.out or default_out_dir(),
            require_all_rpcs=bool(getattr(args, "require_all_rpcs", False)),
            config=getattr(args, "config", None),
        )


def _positive_int(flag: str, value: int, *, low: int) -> None:
    if value < low:
        raise SettingsError(f"{flag}: expected an integer >= {low}, got {value}")


def _check_target(flag: str, address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise SettingsError(f"{flag}: expected HOST:PORT, got {address!r}")
    return address


def locust_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a Locust child: this checkout and its contracts first on the path."""
    paths = [str(REPO_ROOT), str(REPO_ROOT / "protos")]
    existing = os.environ.get("PYTHONPATH")
    if existing:
        paths.append(existing)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


def locust_commands(request: LoadTestRequest, master_port: int) -> list[list[str]]:
    """The Locust command lines: the single process (or master) first, then the workers."""
    base = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--shoptwin-options",
        request.options.to_json(),
    ]
    prefix = request.out_dir / "locust"
    main = [
        *base,
        "--headless",
        "--only-summary",
        "--csv",
        str(prefix),
        "--html",
        str(request.out_dir / "report.html"),
        "--json-file",
        str(request.out_dir / "locust"),
        # The verdict comes from the SLO file, not from "any failure at all".
        "--exit-code-on-error",
        "0",
    ]
    workers = request.workers + request.remote_workers
    if workers <= 1 and request.remote_workers == 0:
        return [main]
    main += [
        "--master",
        "--master-bind-host",
        request.master_bind_host,
        "--master-bind-port",
        str(master_port),
        "--expect-workers",
        str(workers),
        "--expect-workers-max-wait",
        "120",
    ]
    connect_host = (
        "127.0.0.1" if request.master_bind_host in ("*", "0.0.0.0") else request.master_bind_host
    )
    worker = [*base, "--worker", "--master-host", connect_host, "--master-port", str(master_port)]
    return [main] + [list(worker) for _ in range(request.workers)]


def _start_services(request: LoadTestRequest, stack: ExitStack) -> LoadTestRequest:
    """Start the services of the workload on free ports, wired to each other (building missing
    default models first); their targets replace the options'."""
    from services.suite import start_suite

    names = WORKLOAD_SERVICES[request.options.workload]
    suite = start_suite(
        names,
        log_dir=request.out_dir / "services",
        config_path=request.config,
        free_ports=True,
        extra_args=["--log-level", "warning"],
    )
    stack.callback(suite.stop)
    print(f"services SERVING: {suite.targets}", flush=True)
    return dataclasses.replace(
        request, options=dataclasses.replace(request.options, targets=suite.targets)
    )


def run_locust(request: LoadTestRequest) -> int:
    """Run Locust to the end; the exit code of the single process or master."""
    from services.runtime.process import free_port

    request.out_dir.mkdir(parents=True, exist_ok=True)
    if not request.options.out_dir:
        options = dataclasses.replace(request.options, out_dir=str(request.out_dir.resolve()))
        request = dataclasses.replace(request, options=options)
    port = request.master_port or free_port()
    commands = locust_commands(request, port)
    env = locust_env(request.env)
    limit_s = request.options.duration_s + request.options.drain_s + 180
    workers: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        master = subprocess.Popen(commands[0], env=env)
        for index, command in enumerate(commands[1:]):
            log = open(request.out_dir / f"worker-{index}.log", "wb")  # noqa: SIM115
            logs.append(log)
            workers.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
        try:
            code = master.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            master.kill()
            code = master.wait()
            print(f"shoptwin loadtest: Locust ran past {limit_s:.0f} s; stopped", file=sys.stderr)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        return code
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        for log in logs:
            log.close()


@dataclass
class Verdict:
    """The run's outcome against its SLOs."""

    stats: list[RpcStats]
    checks: list[Check]
    missing_rpcs: list[str]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and not self.missing_rpcs


def verdict_of(request: LoadTestRequest) -> Verdict:
    """Read the run's ``locust_stats.csv`` and check it against the SLO file."""
    stats = read_locust_stats_csv(request.out_dir / "locust_stats.csv")
    checks = evaluate(stats, load_slo(request.slo_path))
    missing: list[str] = []
    if request.require_all_rpcs:
        seen = {s.name for s in stats if s.requests > 0}
        for service in WORKLOAD_SERVICES[request.options.workload]:
            spec = SERVICES[service]
            missing += [spec.rpc_name(m) for m in spec.methods() if spec.rpc_name(m) not in seen]
    return Verdict(stats, checks, missing)


def print_verdict(verdict: Verdict) -> None:
    from services.runtime.bench import render_table

    rows: list[dict[str, Any]] = [
        {
            "rpc": s.name,
            "requests": s.requests,
            "failures": s.failures,
            "error_rate": round(s.error_rate, 4),
            "rps": round(s.rps, 1),
            "p50_ms": s.p50_ms,
            "p95_ms": s.p95_ms,
            "p99_ms": s.p99_ms,
        }
        for s in verdict.stats
    ]
    columns = ["rpc", "requests", "failures", "error_rate", "rps", "p50_ms", "p95_ms", "p99_ms"]
    print(render_table(rows, columns))
    failed = [c.as_dict() for c in verdict.checks if not c.passed]
    if failed:
        print("\nSLOs missed:")
        print(render_table(failed, ["rpc", "metric", "measured", "limit", "verdict"]))
    for rpc in verdict.missing_rpcs:
        print(f"not exercised: {rpc}")
    passed = sum(c.passed for c in verdict.checks)
    print(
        f"\nverdict: {'PASS' if verdict.passed else 'FAIL'} "
        f"({passed}/{len(verdict.checks)} checks met"
        f"{f', {len(verdict.missing_rpcs)} RPCs not exercised' if verdict.missing_rpcs else ''})",
        flush=True,
    )


def run_load_test(request: LoadTestRequest) -> int:
    """The whole ``shoptwin loadtest``; its exit code."""
    from services.runtime.bench import run_metadata, write_json

    with ExitStack() as stack:
        if request.up:
            request = _start_services(request, stack)
        code = run_locust(request)
    if code != 0:
        print(f"shoptwin loadtest: Locust exited with code {code}", file=sys.stderr)
        return EXIT_LOCUST_FAILED
    if request.options.record_dir:
        count = sum(
            len(p.read_text(encoding="utf-8").splitlines())
            for p in Path(request.options.record_dir).glob("calls-*.jsonl")
        )
        print(f"dry run: {count} calls recorded in {request.options.record_dir}")
        return 0
    verdict = verdict_of(request)
    print_verdict(verdict)
    write_json(
        request.out_dir / "verdict.json",
        {
            "meta": run_metadata(json.loads(request.options.to_json())),
            "passed": verdict.passed,
            "checks": [c.as_dict() for c in verdict.checks],
            "missing_rpcs": verdict.missing_rpcs,
            "stats": [dataclasses.asdict(s) for s in verdict.stats],
        },
    )
    print(f"results: {request.out_dir}", flush=True)
    return 0 if verdict.passed else EXIT_SLO_MISSED
