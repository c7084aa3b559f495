"""``shoptwin capacity plan``: worker processes per service that meet SLOs at a scenario's peak.

Fast enough to be useful because it never simulates the whole day:

1. **Peak window.** The peak is the middle of the busiest hour of the scenario's daily curve.
   The daily curve is rotated by whole hours (exact: it is piecewise linear between hour
   middles) so that simulated time 0 is the whole hour before a warm-up, and arrivals run to
   the end of a measurement window centred on the peak. Van shifts move with the rotation, so
   vans on shift at the peak send telemetry; no drain. Only calls that complete inside the
   measurement window count (the warm-up fills the sessions and queues).
2. **Probe.** One sweep point at the scenario's worker counts gives each service's offered load
   (mean utilisation x workers); counts below it cannot be stable and are never simulated
   (batching services excepted: their load per request falls as batches grow).
3. **Ladders.** Services are separate stations, so one sweep point sizes all of them at once:
   point ``j`` gives each unresolved service its ``j``-th untried count. A service's answer is
   the smallest count at which every one of its SLOs holds with the **upper bound of the 95 %
   confidence interval** (and its busiest minute stays below utilisation 1).
4. **Confirmation.** The chosen combination runs once more as its own sweep point; its numbers
   fill the replica table (a service that misses there gets one more worker and it runs again).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from services.runtime.settings import SettingsError

#: Candidate counts per service tried in one round (the round's sweep points).
LADDER = 4
#: Extra confirmation rounds when the chosen combination misses an SLO.
CONFIRM_RETRIES = 3
DAY_S = 86400.0


@dataclasses.dataclass(frozen=True)
class PeakWindow:
    """Where the plan simulates: original time of day ``offset_h`` is simulated time 0; calls
    completing in [``measure_from_s``, ``duration_h`` h) are measured."""

    peak_hour: int
    offset_h: int
    measure_from_s: float
    duration_h: float
    #: The peak rate over the day's mean rate.
    peak_multiplier: float
    shoppers_per_s: float

    @property
    def measure_s(self) -> float:
        return self.duration_h * 3600.0 - self.measure_from_s

    def clock(self, sim_s: float) -> str:
        """Simulated seconds as the original time of day, HH:MM."""
        minutes = round((self.offset_h * 3600.0 + sim_s) / 60.0) % (24 * 60)
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "peak_hour": self.peak_hour,
            "peak_time": f"{self.peak_hour:02d}:30",
            "peak_multiplier": round(self.peak_multiplier, 4),
            "shoppers_per_s_at_peak": round(self.shoppers_per_s, 4),
            "simulated_from": self.clock(0.0),
            "warmup_s": self.measure_from_s,
            "measured_from": self.clock(self.measure_from_s),
            "measured_to": self.clock(self.duration_h * 3600.0),
            "measured_s": self.measure_s,
        }


def peak_window(scenario: Any, warmup_min: float, window_min: float) -> PeakWindow:
    """The window around the peak of ``scenario``'s daily curve (hours with arrivals only)."""
    from simulator.behaviour import DailyCurve

    weights = list(scenario.daily_curve)
    hours = [h for h in range(24) if h + 1 <= scenario.duration_h] or list(range(24))
    peak_hour = max(hours, key=lambda h: (weights[h], -h))
    curve = DailyCurve(tuple(weights))
    multiplier = float(curve.multiplier((peak_hour + 0.5) * 3600.0))
    centre_min = peak_hour * 60 + 30
    start_min = centre_min - window_min / 2.0
    end_min = start_min + window_min
    offset_h = math.floor((start_min - warmup_min) / 60.0)
    return PeakWindow(
        peak_hour=peak_hour,
        offset_h=offset_h,
        measure_from_s=(start_min - offset_h * 60) * 60.0,
        duration_h=(end_min - offset_h * 60) / 60.0,
        peak_multiplier=multiplier,
        shoppers_per_s=scenario.shoppers_per_day / DAY_S * multiplier,
    )


def window_overrides(scenario: Any, window: PeakWindow) -> dict[str, Any]:
    """Scenario overrides that simulate ``window``: the rotated curve, the shift moved with it,
    arrivals to the end of the window, no drain, one-minute report windows."""
    shift = window.offset_h % 24
    weights = list(scenario.daily_curve)
    rotated = [weights[(i + shift) % 24] for i in range(24)]
    start = scenario.fleet.shift_start_s - shift * 3600.0
    end = scenario.fleet.shift_end_s - shift * 3600.0
    if end <= 0:
        start, end = start + DAY_S, end + DAY_S
    return {
        "daily_curve": rotated,
        "duration_h": window.duration_h,
        "drain_h": 0.0,
        "model.window_s": 60.0,
        "fleet.shift_start_s": min(max(start, 0.0), DAY_S),
        "fleet.shift_end_s": min(max(end, 0.0), DAY_S),
    }


@dataclasses.dataclass
class Evaluation:
    """One service at one worker count: whether its SLOs held, and how close it came."""

    workers: int
    passed: bool
    #: Worst value / limit over the service's SLOs (upper CI bound); lower is better.
    worst_ratio: float
    point: dict[str, Any]


def evaluate(service: str, slos: list[Any], metrics: dict[str, Any]) -> tuple[bool, float]:
    """(all of ``service``'s SLOs hold with the CI upper bound and its busiest minute is below
    utilisation 1, worst value/limit)."""
    ratios = []
    passed = True
    for slo in slos:
        value = slo.value(metrics, "ci_high")
        if value is None:
            # No calls in the window: nothing to size for.
            continue
        ratios.append(value / slo.limit)
        passed = passed and slo.met_by(value)
    peak = metrics.get(f"{service}.utilisation_peak", {}).get("mean")
    if peak is not None and peak >= 1.0:
        passed = False
        ratios.append(max(ratios, default=1.0) + peak)
    return passed, max(ratios, default=0.0)


def lower_bound(service: str, workers: int, metrics: dict[str, Any], batching: bool) -> int:
    """The fewest workers that can be stable: more than the offered load (mean utilisation
    x workers at the probe). Batching services: 1 (their cost per request falls with load)."""
    if batching:
        return 1
    mean = metrics.get(f"{service}.utilisation_mean", {}).get("mean") or 0.0
    return max(1, math.floor(mean * workers) + 1)


# -- command -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``shoptwin capacity plan``."""
    from simulator.sweep import add_executor_arguments

    parser.add_argument("scenario", help="shipped scenario name (black-friday) or a YAML file")
    parser.add_argument(
        "--slo",
        action="append",
        default=[],
        required=True,
        metavar="TARGET.METRIC<VALUE",
        help="an objective, e.g. 'recommend.p99<200ms', 'classify.p95<100ms', "
        "'telemetry.utilisation<70%%', 'dispatch.error_rate<1%%' (repeat for several)",
    )
    parser.add_argument(
        "--replications",
        type=int,
        default=3,
        metavar="N",
        help="runs per candidate (default 3; the CI needs >= 2)",
    )
    parser.add_argument(
        "--max-workers",
        type=int,
        default=16,
        metavar="M",
        help="largest worker count tried per service (default 16)",
    )
    add_executor_arguments(parser)
    parser.add_argument(
        "--calibration", default=None, metavar="FILE", help="calibration JSON (default: scenario's)"
    )
    parser.add_argument(
        "--warmup-min",
        type=float,
        default=10.0,
        help="simulated minutes before the measured window (default 10)",
    )
    parser.add_argument(
        "--window-min",
        type=float,
        default=20.0,
        help="measured minutes, centred on the peak (default 20)",
    )
    parser.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    parser.add_argument("--shoppers", type=float, default=None, help="override shoppers per day")
    parser.add_argument(
        "--no-network",
        action="store_true",
        help="server-side latency only (turn the 5G model off); default: as the shopper sees it",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write plan.json (default .shoptwin/capacity/plan-NAME)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_args(args: argparse.Namespace) -> None:
    if args.replications < 2:
        raise SettingsError("--replications: must be >= 2 (the plan uses confidence intervals)")
    if args.max_workers < 1:
        raise SettingsError("--max-workers: must be >= 1")
    if args.processes is not None and args.processes < 1:
        raise SettingsError("--processes: must be >= 1")
    if args.seed is not None and args.seed < 0:
        raise SettingsError("--seed: must be >= 0")
    if args.shoppers is not None and args.shoppers < 0:
        raise SettingsError("--shoppers: must be >= 0")
    if not 0 <= args.warmup_min <= 600:
        raise SettingsError("--warmup-min: must be in [0, 600]")
    if not 1 <= args.window_min <= 600:
        raise SettingsError("--window-min: must be in [1, 600]")


def _ci(stat: dict[str, Any] | None, digits: int) -> str:
    if not stat or stat.get("ci_low") is None:
        return "-"
    return f"{stat['ci_low']:.{digits}f}-{stat['ci_high']:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    """``shoptwin capacity plan``."""
    from services.runtime.bench import render_table, write_json
    from simulator.capacity.slo import SloError, parse_slo
    from simulator.cli import run_record
    from simulator.platform import parse_calibration
    from simulator.sweep import (
        SweepError,
        SweepSpec,
        TaskRunner,
        apply_overrides,
        load_inputs,
        progress_bar,
        replication_seed,
        run_sweep,
    )

    _check_args(args)
    scenario, text, calibration_data, calibration_source = load_inputs(
        args.scenario, args.calibration
    )
    if args.seed is not None:
        scenario = scenario.with_overrides(seed=args.seed)
    base: dict[str, Any] = {}
    if args.shoppers is not None:
        base["shoppers_per_day"] = args.shoppers
        scenario = scenario.with_overrides(shoppers_per_day=args.shoppers)
    if args.no_network:
        base["network.enabled"] = False
    calibration = parse_calibration(calibration_data, calibration_source).with_overrides(
        scenario.platform.workers, scenario.platform.speedup
    )
    services = list(calibration.services)
    try:
        slos = [parse_slo(s, services) for s in args.slo]
    except SloError as exc:
        raise SettingsError(str(exc)) from None
    window = peak_window(scenario, args.warmup_min, args.window_min)
    base.update(window_overrides(scenario, window))
    try:
        apply_overrides(scenario, base)
    except SweepError as exc:
        raise SettingsError(f"plan window: {exc}") from None
    by_service: dict[str, list[Any]] = {}
    for slo in slos:
        by_service.setdefault(slo.service, []).append(slo)
    current = {name: svc.workers for name, svc in calibration.services.items()}
    record = run_record(scenario, "capacity-plan", args)
    started = time.perf_counter()
    rounds: list[dict[str, Any]] = []
    evals: dict[str, dict[int, Evaluation]] = {s: {} for s in by_service}
    chosen: dict[str, int] = {}
    bounds: dict[str, int] = {}

    def point_of(counts: dict[str, int]) -> dict[str, Any]:
        return {f"platform.workers.{s}": c for s, c in sorted(counts.items())}

    with (
        TaskRunner(args.scheduler, args.processes) as runner,
        progress_bar(None, f"plan {scenario.name}", args.no_progress or args.json) as advance,
    ):

        def sweep(stage: str, counts_list: list[dict[str, int]]) -> list[dict[str, Any]]:
            spec = SweepSpec(
                scenario_yaml=text,
                scenario_source=scenario.source,
                calibration=calibration_data,
                calibration_source=calibration_source,
                seed=scenario.seed,
                points=[point_of(c) for c in counts_list],
                replications=args.replications,
                base_overrides=base,
                measure_from_s=window.measure_from_s,
            )
            points = run_sweep(spec, runner, advance)
            for counts, point in zip(counts_list, points, strict=True):
                rounds.append({"stage": stage, "workers": counts, "point": point})
            return points

        # 1. Probe at the scenario's counts: the offered load of every service.
        probe = sweep("probe", [dict(current)])[0]
        for service, service_slos in by_service.items():
            batching = calibration.services[service].batching is not None
            bounds[service] = lower_bound(service, current[service], probe["metrics"], batching)
            if current[service] >= bounds[service]:
                passed, ratio = evaluate(service, service_slos, probe["metrics"])
                evals[service][current[service]] = Evaluation(
                    current[service], passed, ratio, probe
                )

        # 2. Ladders until every service has its smallest passing count or runs out.
        def resolve(service: str) -> int | None:
            for count in range(bounds[service], args.max_workers + 1):
                found = evals[service].get(count)
                if found is None:
                    return None
                if found.passed:
                    return count
            return None

        while True:
            pending: dict[str, list[int]] = {}
            for service in by_service:
                answer = resolve(service)
                if answer is not None:
                    chosen[service] = answer
                    continue
                # Latency falls with workers: nothing above a passing count needs trying.
                ceiling = min(
                    [e.workers - 1 for e in evals[service].values() if e.passed]
                    + [args.max_workers]
                )
                untried = [
                    c for c in range(bounds[service], ceiling + 1) if c not in evals[service]
                ]
                if untried:
                    pending[service] = untried[:LADDER]
            if not pending:
                break
            width = max(len(v) for v in pending.values())
            counts_list = []
            for j in range(width):
                counts = {**current, **chosen}
                for service, candidates in pending.items():
                    counts[service] = candidates[min(j, len(candidates) - 1)]
                counts_list.append(counts)
            points = sweep("ladder", counts_list)
            for counts, point in zip(counts_list, points, strict=True):
                for service in pending:
                    passed, ratio = evaluate(service, by_service[service], point["metrics"])
                    evals[service][counts[service]] = Evaluation(
                        counts[service], passed, ratio, point
                    )

        # Services with no passing count: the best one found (lowest worst ratio).
        unmet: dict[str, Evaluation | None] = {}
        for service in by_service:
            if service not in chosen:
                best = min(evals[service].values(), key=lambda e: e.worst_ratio, default=None)
                unmet[service] = best
                chosen[service] = best.workers if best is not None else args.max_workers

        # 3. Confirm the combination; a service that misses gets one more worker.
        final = {**current, **chosen}
        confirm = sweep("confirm", [final])[0]
        for _ in range(CONFIRM_RETRIES):
            missing = [
                s
                for s in by_service
                if s not in unmet
                and not evaluate(s, by_service[s], confirm["metrics"])[0]
                and final[s] < args.max_workers
            ]
            if not missing:
                break
            for service in missing:
                final[service] += 1
            confirm = sweep("confirm", [final])[0]
    wall = time.perf_counter() - started

    metrics = confirm["metrics"]
    rows = []
    all_met = True
    for service in services:
        util_mean = metrics.get(f"{service}.utilisation_mean", {}).get("mean")
        util_peak = metrics.get(f"{service}.utilisation_peak", {}).get("mean")
        if service not in by_service:
            rows.append(
                {
                    "service": service,
                    "workers": final[service],
                    "slo": "(none: kept)",
                    "met": "-",
                    "util_mean": util_mean,
                    "util_peak": util_peak,
                }
            )
            continue
        for slo in by_service[service]:
            mean = slo.value(metrics, "mean")
            high = slo.value(metrics, "ci_high")
            key = slo.keys()[0]
            if len(slo.keys()) > 1 and mean is not None:
                key = max(
                    (k for k in slo.keys() if metrics.get(k, {}).get("mean") is not None),  # noqa: SIM118
                    key=lambda k: metrics[k]["mean"],
                )
            met = high is not None and slo.met_by(high)
            ok = met and (util_peak is None or util_peak < 1.0)
            if mean is not None:
                all_met = all_met and ok
            rows.append(
                {
                    "service": service,
                    "workers": final[service],
                    "slo": slo.describe(),
                    "predicted": None if mean is None else round(mean, 3),
                    "ci95": _ci(metrics.get(key), 1 if slo.unit == "ms" else 3),
                    "ci_high": None if high is None else round(high, 3),
                    "margin_pct": None if mean is None else round(100 * slo.margin(mean), 1),
                    "met": "no data" if mean is None else ("yes" if ok else "NO"),
                    "util_mean": util_mean,
                    "util_peak": util_peak,
                }
            )
    rates = []
    for key in sorted(k for k in metrics if k.endswith(".throughput_rps")):
        rpc = key.removesuffix(".throughput_rps")
        rates.append(
            {
                "rpc": rpc,
                "calls_per_s": metrics[key]["mean"],
                "busiest_minute_per_s": metrics.get(f"{rpc}.throughput_peak_rps", {}).get("mean"),
            }
        )
    runs = sum(len(r["point"]["seeds"]) for r in rounds)
    payload: dict[str, Any] = {
        "run": {
            **record,
            "calibration": calibration_source,
            "calibration_measured": bool(calibration.provenance.get("measured")),
            "executor": f"dask {args.scheduler}" if args.scheduler else "process pool",
            "replications": args.replications,
            "replication_seeds": [
                replication_seed(scenario.seed, r) for r in range(args.replications)
            ],
            "wall_s": round(wall, 2),
            "points": len(rounds),
            "runs": runs,
        },
        "window": window.as_dict(),
        "slos": [s.text for s in slos],
        "network": not args.no_network and scenario.network.enabled,
        "workers": final,
        "all_met": all_met and not unmet,
        "unmet": {
            s: (None if e is None else {"best_workers": e.workers, "worst_ratio": e.worst_ratio})
            for s, e in unmet.items()
        },
        "table": rows,
        "peak_rates": rates,
        "search": [
            {
                "stage": r["stage"],
                "workers": r["workers"],
                "passed": {
                    s: evaluate(s, by_service[s], r["point"]["metrics"])[0] for s in by_service
                },
            }
            for r in rounds
        ],
        "confirm": confirm,
    }
    out = args.out if args.out is not None else Path(".shoptwin/capacity") / f"plan-{scenario.name}"
    write_json(out / "plan.json", payload)
    if args.json:
        print(json.dumps(payload, default=str))
    else:
        w = payload["window"]
        print(
            f"capacity plan {scenario.name} (seed {scenario.seed}), calibration "
            f"{calibration_source} ("
            + ("measured" if payload["run"]["calibration_measured"] else "NOT measured: estimates")
            + ")"
        )
        print(
            f"peak: {w['peak_time']} at {w['peak_multiplier']:.2f}x the day's mean rate, "
            f"{w['shoppers_per_s_at_peak']:.2f} shoppers/s; simulated {w['simulated_from']}-"
            f"{w['measured_to']}, measured {w['measured_from']}-{w['measured_to']} "
            f"({'with' if payload['network'] else 'without'} the 5G network's delays)"
        )
        print(
            f"{len(rounds)} sweep points x {args.replications} replications ({runs} runs) in "
            f"{wall:.1f} s\n"
        )
        print(
            render_table(
                rows,
                [
                    "service",
                    "workers",
                    "slo",
                    "predicted",
                    "ci95",
                    "margin_pct",
                    "met",
                    "util_mean",
                    "util_peak",
                ],
            )
        )
        print("\npeak arrival rates (calls completed per second in the measured window)")
        print(render_table(rates, ["rpc", "calls_per_s", "busiest_minute_per_s"]))
        for service, best in unmet.items():
            if best is None:
                print(f"\n{service}: no count up to --max-workers {args.max_workers} is stable")
            else:
                print(
                    f"\n{service}: no count up to --max-workers {args.max_workers} meets its SLOs; "
                    f"best found: {best.workers} workers at {best.worst_ratio:.2f}x the limit"
                )
        print(f"\nwrote {out / 'plan.json'}")
    return 0 if payload["all_met"] else 1
