"""``shoptwin simulate`` and ``shoptwin bench simulator``.

Heavy imports (simpy, numpy, grpc) stay inside the handlers so ``shoptwin --help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from services.cli.commands import CommandGroups
from services.runtime.settings import SettingsError


def register(groups: CommandGroups) -> None:
    """Add ``simulate`` (top level) and ``bench simulator``."""
    parser = groups.top.add_parser(
        "simulate",
        help="run the digital twin (model or live mode) or validate it",
        description="Run a scenario: in model mode the services are calibrated queues (capacity "
        "planning); in live mode the same shoppers and vans call the real services through "
        "the 5G model. --validate compares the queue model with queueing theory.",
    )
    parser.add_argument(
        "scenario",
        nargs="?",
        default=None,
        help="shipped scenario name (demo, black-friday, fleet-growth, mmc) or a YAML file",
    )
    parser.add_argument(
        "--mode",
        choices=("model", "live"),
        default="model",
        help="model: services as calibrated queues (default); live: the real services",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=None,
        metavar="X",
        help="live mode: simulated seconds per wall-clock second (default: the scenario's)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write result.json and report.html (default .shoptwin/simulate/NAME-MODE)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    parser.add_argument("--shoppers", type=float, default=None, help="override shoppers per day")
    parser.add_argument(
        "--duration-h",
        type=float,
        default=None,
        help="override simulated hours (model: arrivals; live: live.duration_h)",
    )
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="FILE",
        help="calibration JSON of the platform model (default: the scenario's)",
    )
    parser.add_argument(
        "--no-network", action="store_true", help="turn the 5G model off (a baseline)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--validate",
        action="store_true",
        help="compare the queue model with M/M/1, M/M/c, M/D/1 theory (scenario default: mmc); "
        "exits 1 when a case is off by more than the tolerance",
    )
    parser.add_argument("--replications", type=int, default=None, help="--validate: replications")
    parser.add_argument(
        "--customers", type=int, default=None, help="--validate: customers per replication"
    )
    parser.add_argument(
        "--bench",
        action="store_true",
        help="model mode: also measure a bare SimPy loop in the same run and report the ratio",
    )
    parser.add_argument(
        "--up",
        action="store_true",
        help="live mode: start the four services first and stop them at the end",
    )
    parser.add_argument(
        "--targets",
        default=None,
        help="live mode: service addresses as name=host:port,... (default: the default ports)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=Path(".shoptwin/logs"),
        help="live mode with --up: where the services write their logs",
    )
    parser.set_defaults(handler=run_simulate)

    bench = groups.bench.add_parser(
        "simulator",
        help="model-mode events per second beside a bare SimPy loop",
        description="Runs a scenario in model mode (default: black-friday, 1,000,000 shoppers) "
        "and a bare SimPy loop in the same process, and reports both event rates.",
    )
    bench.add_argument("--scenario", default="black-friday")
    bench.add_argument("--shoppers", type=float, default=None, help="override shoppers per day")
    bench.add_argument("--duration-h", type=float, default=None, help="override simulated hours")
    bench.add_argument("--json", type=Path, default=None, metavar="FILE", help="write JSON here")
    bench.add_argument("--no-progress", action="store_true")
    bench.set_defaults(handler=run_bench)


def _scenario(args: argparse.Namespace, default: str) -> Any:
    from simulator.scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(args.scenario or default)
    except ScenarioError as exc:
        raise SettingsError(str(exc)) from None
    changes: dict[str, Any] = {}
    if getattr(args, "seed", None) is not None:
        if args.seed < 0:
            raise SettingsError("--seed: must be >= 0")
        changes["seed"] = args.seed
    if getattr(args, "shoppers", None) is not None:
        if args.shoppers < 0:
            raise SettingsError("--shoppers: must be >= 0")
        changes["shoppers_per_day"] = args.shoppers
    if getattr(args, "duration_h", None) is not None:
        if not 0 < args.duration_h <= 168:
            raise SettingsError("--duration-h: must be in (0, 168]")
        if getattr(args, "mode", "model") == "live":
            import dataclasses

            changes["live"] = dataclasses.replace(scenario.live, duration_h=args.duration_h)
        else:
            changes["duration_h"] = args.duration_h
    if getattr(args, "no_network", False):
        import dataclasses

        changes["network"] = dataclasses.replace(scenario.network, enabled=False)
    return scenario.with_overrides(**changes) if changes else scenario


def _calibration(args: argparse.Namespace, scenario: Any) -> Any:
    from simulator.platform import CalibrationError, load_calibration

    name = getattr(args, "calibration", None) or scenario.platform.calibration
    try:
        return load_calibration(name, scenario.source)
    except CalibrationError as exc:
        raise SettingsError(str(exc)) from None


def run_record(scenario: Any, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """What a reader needs to reproduce the run: scenario, seed, commit, arguments."""
    from services.runtime.bench import run_metadata

    arguments = {k: v for k, v in vars(args).items() if k != "handler"}
    meta = run_metadata(arguments)
    return {
        "scenario": scenario.name,
        "scenario_file": scenario.source,
        "seed": scenario.seed,
        "mode": mode,
        **meta,
    }


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    return args.out if args.out is not None else Path(".shoptwin/simulate") / name


def _progress(total: float, unit: str, disable: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit=unit,
        disable=disable,
        desc=desc,
        file=sys.stderr,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} {unit} [{elapsed}<{remaining}]",
    )


def run_simulate(args: argparse.Namespace) -> int:
    if args.speed is not None and args.speed <= 0:
        raise SettingsError("--speed: must be > 0")
    if args.replications is not None and args.replications < 2:
        raise SettingsError("--replications: must be >= 2")
    if args.customers is not None and args.customers < 100:
        raise SettingsError("--customers: must be >= 100")
    if args.validate:
        return _run_validate(args)
    if args.scenario is None:
        raise SettingsError("scenario: name a scenario (demo, black-friday, fleet-growth, mmc)")
    if args.mode == "live":
        return _run_live(args)
    if args.up or args.targets:
        raise SettingsError("--up/--targets: only with --mode live")
    return _run_model(args)


def _run_model(args: argparse.Namespace) -> int:
    from simulator.model_mode import ModelRun, bare_simpy_rate
    from simulator.render import model_sections, model_summary
    from simulator.report import write_html, write_json

    scenario = _scenario(args, "demo")
    if scenario.validation is not None and scenario.shoppers_per_day == 0:
        return _run_validate(args)
    record = run_record(scenario, "model", args)
    try:
        run = ModelRun(scenario, _calibration(args, scenario))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    hours = run.end_s / 3600.0
    with _progress(hours, "sim h", args.no_progress or args.json, scenario.name) as bar:
        result = run.run(progress=lambda s: bar.update(min(s / 3600.0, bar.total - bar.n)))
    payload: dict[str, Any] = {"run": record, "result": result.as_dict()}
    if args.bench:
        bare = bare_simpy_rate(min(max(result.events, 200_000), 2_000_000))
        payload["bench"] = {
            "model_events_per_s": round(result.events_per_s, 1),
            "bare_simpy_events_per_s": round(bare, 1),
            "ratio": round(result.events_per_s / bare, 3) if bare else None,
            "shoppers_per_wall_s": round(result.shoppers / result.wall_s, 1),
        }
    out = _out_dir(args, f"{scenario.name}-model")
    write_json(out / "result.json", payload)
    sections = model_sections(payload["result"])
    write_html(out / "report.html", f"ShopTwin model mode: {scenario.name}", record, sections)
    if args.json:
        print(json.dumps(payload, default=str))
    else:
        print(model_summary(payload["result"]))
        if "bench" in payload:
            b = payload["bench"]
            print(
                f"bench: model {b['model_events_per_s']:,.0f} events/s, bare SimPy loop "
                f"{b['bare_simpy_events_per_s']:,.0f} events/s, ratio {b['ratio']}"
            )
        print(f"wrote {out / 'result.json'} and {out / 'report.html'}")
    return 0


def _run_validate(args: argparse.Namespace) -> int:
    import dataclasses

    from simulator.render import validation_sections, validation_summary
    from simulator.report import write_html, write_json
    from simulator.validation import validate

    scenario = _scenario(args, "mmc")
    if scenario.validation is None or not scenario.validation.cases:
        raise SettingsError(f"scenario: {scenario.name} has no validation section")
    config = scenario.validation
    if args.replications is not None:
        config = dataclasses.replace(config, replications=args.replications)
    if args.customers is not None:
        config = dataclasses.replace(
            config, customers=args.customers, warmup=min(config.warmup, args.customers // 10)
        )
    record = run_record(scenario, "validate", args)
    total = len(config.cases) * config.replications
    started = time.perf_counter()
    with _progress(total, "reps", args.no_progress or args.json, "validate") as bar:
        results = validate(config, scenario.seed, progress=bar.update)
    rows = [r.as_dict() for r in results]
    payload = {
        "run": record,
        "validation": {
            "tolerance": config.tolerance,
            "replications": config.replications,
            "customers": config.customers,
            "warmup": config.warmup,
            "wall_s": round(time.perf_counter() - started, 2),
            "cases": rows,
            "passed": all(r.passed for r in results),
        },
    }
    out = _out_dir(args, f"{scenario.name}-validate")
    write_json(out / "result.json", payload)
    write_html(
        out / "report.html",
        f"ShopTwin validation: {scenario.name}",
        record,
        validation_sections(rows),
    )
    if args.json:
        print(json.dumps(payload, default=str))
    else:
        print(validation_summary(rows))
        failed = [r.name for r in results if not r.passed]
        print(
            f"{len(results) - len(failed)}/{len(results)} cases within "
            f"{config.tolerance:.0%} of theory"
            + (f"; failed: {', '.join(failed)}" if failed else "")
        )
        print(f"wrote {out / 'result.json'} and {out / 'report.html'}")
    return 0 if all(r.passed for r in results) else 1


def _run_live(args: argparse.Namespace) -> int:
    import dataclasses

    from simulator.live import LiveTargets, run_live_command

    scenario = _scenario(args, "demo")
    if args.speed is not None:
        scenario = scenario.with_overrides(
            live=dataclasses.replace(scenario.live, speed=args.speed)
        )
    try:
        targets = LiveTargets.parse(args.targets) if args.targets else LiveTargets()
    except ValueError as exc:
        raise SettingsError(f"--targets: {exc}") from None
    record = run_record(scenario, "live", args)
    return run_live_command(
        scenario,
        targets,
        record=record,
        out=_out_dir(args, f"{scenario.name}-live"),
        up=args.up,
        log_dir=args.log_dir,
        as_json=args.json,
        progress=not (args.no_progress or args.json),
        config_path=getattr(args, "config", None),
    )


def run_bench(args: argparse.Namespace) -> int:
    from services.runtime.bench import render_table, run_metadata
    from services.runtime.bench import write_json as write_bench_json
    from simulator.model_mode import ModelRun, bare_simpy_rates

    scenario = _scenario(args, args.scenario)
    run = ModelRun(scenario, _calibration(args, scenario))
    with _progress(run.end_s / 3600.0, "sim h", args.no_progress, scenario.name) as bar:
        result = run.run(progress=lambda s: bar.update(min(s / 3600.0, bar.total - bar.n)))
    bare, bare_cpu = bare_simpy_rates(min(max(result.events, 500_000), 3_000_000))
    # Wall clock is the goal's measure; CPU time is printed beside it because on a shared
    # machine the long model run and the short bare loop may get different shares of a core.
    per_cpu_s = result.events / result.cpu_s if result.cpu_s > 0 else 0.0
    rows = [
        {
            "what": f"model mode: {scenario.name}",
            "shoppers": result.shoppers,
            "events": result.events,
            "wall_s": round(result.wall_s, 2),
            "shoppers_per_s": round(result.shoppers / result.wall_s, 1),
            "events_per_s": round(result.events_per_s, 1),
            "ratio_to_bare": round(result.events_per_s / bare, 3),
            "cpu_s": round(result.cpu_s, 2),
            "events_per_cpu_s": round(per_cpu_s, 1),
            "cpu_ratio_to_bare": round(per_cpu_s / bare_cpu, 3),
        },
        {
            "what": "bare SimPy loop (timeouts only)",
            "events_per_s": round(bare, 1),
            "ratio_to_bare": 1.0,
            "events_per_cpu_s": round(bare_cpu, 1),
            "cpu_ratio_to_bare": 1.0,
        },
    ]
    columns = ["what", "shoppers", "events", "wall_s", "shoppers_per_s", "events_per_s"]
    columns += ["ratio_to_bare", "cpu_s", "events_per_cpu_s", "cpu_ratio_to_bare"]
    print(render_table(rows, columns))
    if args.json is not None:
        arguments = {k: v for k, v in vars(args).items() if k != "handler"}
        write_bench_json(
            args.json,
            {
                "run": {
                    **run_metadata(arguments),
                    "scenario": scenario.name,
                    "seed": scenario.seed,
                },
                "rows": rows,
            },
        )
    return 0
