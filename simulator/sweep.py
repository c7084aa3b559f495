"""``shoptwin sweep``: a scenario in model mode over a parameter grid, N replications per grid
point, on a local process pool or a Dask cluster, aggregated with confidence intervals.

The unit of work is :func:`run_replication`, a top-level function of plain data (the scenario's
YAML text, the calibration's JSON object, overrides, a seed) returning plain data (summary
metrics), so a spawned process and a Dask worker run identical code and a remote worker needs no
files. Replication ``r`` of every grid point uses the same seed (derived from the scenario's seed
and ``r`` only): grid points are compared under common random numbers, and the result does not
depend on the order in which tasks finish or on the executor.

``simulator.capacity.plan`` builds its own points on the same machinery.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import math
import os
import sys
import time
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services.runtime.settings import SettingsError

#: Keys a sweep cannot change (they are not model-mode knobs or need more than one value).
_FIXED_KEYS = ("name", "description", "source", "validation", "live", "platform.calibration")

#: YAML spellings of scenario fields whose dataclass name differs.
_ALIASES = {"catalogue.items": "catalogue_items", "depot": "frame"}


class SweepError(ValueError):
    """A bad --param, override or sweep setting; the message names it."""


# -- parameters and grid ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Param:
    """One swept scenario key and its values, as given on the command line."""

    key: str
    values: tuple[Any, ...]
    #: The --param text, for messages.
    text: str


def _parse_scalar(text: str) -> Any:
    """A command-line value as YAML reads it: ``3`` an int, ``0.5`` a float, ``true`` a bool."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, dict | list) or value is None else value


def parse_param(text: str) -> Param:
    """``NAME=V1,V2,...`` into a :class:`Param` (values typed as YAML reads them)."""
    if "=" not in text:
        raise SweepError(f"--param {text}: expected NAME=V1,V2,... (e.g. fleet.vehicles=100,200)")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise SweepError(f"--param {text}: the name before '=' is empty")
    parts = [p.strip() for p in raw.split(",")]
    if not raw.strip() or any(not p for p in parts):
        raise SweepError(f"--param {text}: {key}: empty value in {raw!r}")
    values = tuple(_parse_scalar(p) for p in parts)
    if len(set(map(repr, values))) != len(values):
        raise SweepError(f"--param {text}: {key}: repeated value")
    return Param(key, values, text)


def expand_grid(params: Sequence[Param]) -> list[dict[str, Any]]:
    """Every combination of the params' values (the first param varies slowest); one empty
    point when there are no params."""
    keys = [p.key for p in params]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise SweepError(f"--param {dup}: given twice; list all its values in one --param")
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(p.values for p in params))
    ]


def replication_seed(scenario_seed: int, replication: int) -> int:
    """The seed of replication ``replication``: from the scenario's seed and the index only, so
    every grid point sees the same random numbers (common random numbers)."""
    import numpy as np

    state = np.random.SeedSequence([scenario_seed, replication]).generate_state(1)
    return int(state[0]) & 0x7FFFFFFF


# -- overrides ---------------------------------------------------------------------------------


def _convert(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the type ``hint`` of a scenario field, or a SweepError naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _convert(value, next(a for a in args if a is not type(None)), key)
    if hint is bool:
        if not isinstance(value, bool):
            raise SweepError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SweepError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SweepError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise SweepError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if origin is tuple and args and args[-1] is not Ellipsis:
        raise SweepError(f"{key}: cannot be swept (a structured value)")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise SweepError(f"{key}: expected a list, got {value!r}")
        return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    raise SweepError(f"{key}: cannot be swept (a structured value)")


def _replace_path(obj: Any, parts: list[str], value: Any, key: str) -> Any:
    """``obj`` (a dataclass) with the field at ``parts`` set to ``value``."""
    name = parts[0]
    fields = {f.name: f for f in dataclasses.fields(obj) if not f.name.startswith("_")}
    if name not in fields:
        prefix = key[: len(key) - len(".".join(parts))]
        raise SweepError(f"{prefix}{name}: unknown key; known keys: {', '.join(sorted(fields))}")
    hint = typing.get_type_hints(type(obj))[name]
    if len(parts) == 1:
        return dataclasses.replace(obj, **{name: _convert(value, hint, key)})
    child = getattr(obj, name)
    if dataclasses.is_dataclass(child) and not isinstance(child, type):
        return dataclasses.replace(obj, **{name: _replace_path(child, parts[1:], value, key)})
    if isinstance(child, Mapping) and len(parts) == 2:
        value_hint = typing.get_args(hint)[1] if typing.get_args(hint) else Any
        converted = value if value_hint is Any else _convert(value, value_hint, key)
        return dataclasses.replace(obj, **{name: {**child, parts[1]: converted}})
    raise SweepError(f"{key}: cannot be swept (no such scalar key)")


def apply_overrides(scenario: Any, overrides: Mapping[str, Any]) -> Any:
    """``scenario`` with dotted keys (``fleet.vehicles``, ``platform.workers.intent``) set.

    Values are type-checked against the scenario's dataclasses and the scenario's range checks
    run again; a ``SweepError`` names the key.
    """
    from simulator.scenario import ScenarioError, _check, _Source

    for key, value in overrides.items():
        dotted = key
        for alias, field_name in _ALIASES.items():
            if dotted == alias or dotted.startswith(alias + "."):
                dotted = field_name + dotted[len(alias) :]
        if any(dotted == f or dotted.startswith(f + ".") for f in _FIXED_KEYS):
            raise SweepError(f"{key}: cannot be swept")
        if dotted.startswith("network.profiles"):
            raise SweepError(f"{key}: cannot be swept (edit the scenario's network.profiles)")
        if dotted.startswith("platform.workers.") and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise SweepError(f"{key}: expected an integer >= 1, got {value!r}")
        scenario = _replace_path(scenario, dotted.split("."), value, key)
    try:
        _check(scenario, _Source("override", {}))
    except ScenarioError as exc:
        # "override: fleet.vehicles: must be >= 1" -> "fleet.vehicles: must be >= 1"
        raise SweepError(str(exc).removeprefix("override: ")) from None
    return scenario


# -- the task ----------------------------------------------------------------------------------


def summarise(run: Any, result: Any, measure_from_s: float = 0.0) -> dict[str, float]:
    """Flat summary metrics of one model-mode run, counting only what completed at or after
    ``measure_from_s`` (a warm-up before it is discarded).

    Keys: ``SERVICE.Rpc.{calls,p50_ms,p95_ms,p99_ms,mean_ms,throughput_rps,
    throughput_peak_rps,error_rate}``, ``SERVICE.{workers,utilisation_mean,utilisation_peak}``,
    ``shoppers``, ``events``, ``orders_placed``, ``orders_on_time``, ``orders_on_time_share``.
    """
    import numpy as np

    span = max(result.simulated_s - measure_from_s, 1e-9)
    series = result.series
    starts = np.asarray(series["window_start_s"], dtype=np.float64)
    measured = starts >= measure_from_s - 1e-9
    metrics: dict[str, float] = {}
    # The per-call records of the stations, so that a warm-up can be cut off exactly (the
    # result's percentiles cover the whole run).
    for service, station in run.stations.items():
        for rpc, stats in station.stats.items():
            key = f"{service}.{rpc}"
            latency = np.frombuffer(stats.latency_s, dtype=np.float64) * 1000.0
            done = np.frombuffer(stats.completed_at, dtype=np.float64)
            if latency.size == 0 and stats.failed_network == 0:
                continue
            window = latency[done >= measure_from_s]
            total = latency.size + stats.failed_network
            if window.size:
                p50, p95, p99 = np.percentile(window, [50, 95, 99])
                mean = float(window.mean())
            else:
                p50 = p95 = p99 = mean = math.nan
            peak_tput = max(
                (
                    t
                    for t, m in zip(series["throughput_rps"].get(key, []), measured, strict=False)
                    if m
                ),
                default=0.0,
            )
            metrics.update(
                {
                    f"{key}.calls": float(window.size),
                    f"{key}.p50_ms": float(p50),
                    f"{key}.p95_ms": float(p95),
                    f"{key}.p99_ms": float(p99),
                    f"{key}.mean_ms": mean,
                    f"{key}.throughput_rps": window.size / span,
                    f"{key}.throughput_peak_rps": float(peak_tput),
                    f"{key}.error_rate": stats.failed_network / total if total else 0.0,
                }
            )
    window_s = result.window_s
    for service, per_window in series["utilisation"].items():
        values = [u for u, m in zip(per_window, measured, strict=True) if m]
        metrics[f"{service}.workers"] = float(result.utilisation[service]["workers"])
        metrics[f"{service}.utilisation_mean"] = sum(values) * window_s / span if values else 0.0
        metrics[f"{service}.utilisation_peak"] = max(values, default=0.0)
    deliveries = result.deliveries
    placed = deliveries["placed"]
    metrics["shoppers"] = float(result.shoppers)
    metrics["events"] = float(result.events)
    metrics["orders_placed"] = float(placed)
    metrics["orders_on_time"] = float(deliveries["delivered_on_time"])
    metrics["orders_on_time_share"] = deliveries["delivered_on_time"] / placed if placed else 0.0
    return metrics


def run_replication(task: Mapping[str, Any]) -> dict[str, Any]:
    """One model-mode run of one grid point: plain data in, plain data out.

    ``task``: ``scenario_yaml``, ``scenario_source``, ``calibration`` (a calibration JSON
    object), ``calibration_source``, ``overrides`` (dotted key -> value), ``seed``,
    ``measure_from_s``, ``point``, ``replication``. Returns the summary metrics with the point,
    replication, seed and wall time.
    """
    from simulator.model_mode import ModelRun
    from simulator.platform import parse_calibration
    from simulator.scenario import parse_scenario

    scenario = parse_scenario(task["scenario_yaml"], source=task["scenario_source"])
    scenario = apply_overrides(scenario, {**task["overrides"], "seed": task["seed"]})
    calibration = parse_calibration(task["calibration"], task["calibration_source"])
    started = time.perf_counter()
    run = ModelRun(scenario, calibration)
    result = run.run()
    return {
        "point": task["point"],
        "replication": task["replication"],
        "seed": task["seed"],
        "metrics": summarise(run, result, float(task.get("measure_from_s", 0.0))),
        "wall_s": time.perf_counter() - started,
    }


# -- executors ---------------------------------------------------------------------------------


class TaskRunner:
    """Runs :func:`run_replication` tasks on a spawned process pool or a Dask cluster and
    returns the results in task order (whatever order they finish in)."""

    def __init__(self, scheduler: str | None = None, processes: int | None = None) -> None:
        self.scheduler = scheduler
        self.processes = processes or max(1, os.cpu_count() or 1)
        self._pool: Any = None
        self._client: Any = None

    def __enter__(self) -> TaskRunner:
        if self.scheduler:
            from distributed import Client

            try:
                self._client = Client(self.scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise SettingsError(
                    f"--scheduler: cannot reach the Dask scheduler at {self.scheduler}: {exc}"
                ) from None
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                max_workers=self.processes, mp_context=multiprocessing.get_context("spawn")
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    @property
    def description(self) -> str:
        if self.scheduler:
            return f"dask {self.scheduler}"
        return f"process pool ({self.processes} processes, spawn)"

    def map(
        self,
        tasks: Sequence[Mapping[str, Any]],
        done: Callable[[], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Every task's result, in the order of ``tasks``; ``done`` is called as each ends."""
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        if self._client is not None:
            from distributed import as_completed as dask_completed

            futures = self._client.map(run_replication, [dict(t) for t in tasks], pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            for future in dask_completed(futures):
                results[index[future.key]] = future.result()
                if done is not None:
                    done()
        else:
            from concurrent.futures import as_completed

            assert self._pool is not None, "TaskRunner used outside 'with'"
            pending = {self._pool.submit(run_replication, dict(t)): i for i, t in enumerate(tasks)}
            for future in as_completed(pending):
                results[pending[future]] = future.result()
                if done is not None:
                    done()
        return [r for r in results if r is not None]


# -- aggregation -------------------------------------------------------------------------------


def t_quantile(confidence: float, dof: int) -> float:
    """The two-sided Student t quantile (e.g. 2.776 for 95 % and 4 degrees of freedom)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2.0, dof))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample standard deviation and the Student-t confidence interval of the mean of
    the finite ``values`` (``None`` where there are too few)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(finite)
    if n == 0:
        return {"mean": None, "sd": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = math.fsum(finite) / n
    if n == 1:
        return {"mean": mean, "sd": None, "ci_low": None, "ci_high": None, "n": 1}
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def aggregate(
    replications: Sequence[Mapping[str, float]], confidence: float = 0.95
) -> dict[str, dict[str, Any]]:
    """Per metric over the replications of one grid point: mean, sd and CI."""
    keys = sorted({k for r in replications for k in r})
    return {k: mean_ci([r.get(k, math.nan) for r in replications], confidence) for k in keys}


# -- the sweep as a library --------------------------------------------------------------------


@dataclasses.dataclass
class SweepSpec:
    """What a sweep runs: a scenario (YAML text), a calibration (JSON object), the points
    (override dicts) and the replications. ``base_overrides`` apply to every point."""

    scenario_yaml: str
    scenario_source: str
    calibration: dict[str, Any]
    calibration_source: str
    seed: int
    points: list[dict[str, Any]]
    replications: int
    base_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    measure_from_s: float = 0.0

    def tasks(self) -> list[dict[str, Any]]:
        """One task per (point, replication); seeds depend on the replication only."""
        return [
            {
                "scenario_yaml": self.scenario_yaml,
                "scenario_source": self.scenario_source,
                "calibration": self.calibration,
                "calibration_source": self.calibration_source,
                "overrides": {**self.base_overrides, **point},
                "seed": replication_seed(self.seed, r),
                "measure_from_s": self.measure_from_s,
                "point": i,
                "replication": r,
            }
            for i, point in enumerate(self.points)
            for r in range(self.replications)
        ]

    def validate(self) -> None:
        """Apply every point's overrides in this process first, so a bad value stops the
        sweep before any work is sent out."""
        from simulator.platform import CalibrationError, parse_calibration
        from simulator.scenario import parse_scenario

        scenario = parse_scenario(self.scenario_yaml, source=self.scenario_source)
        calibration = parse_calibration(self.calibration, self.calibration_source)
        for point in self.points:
            changed = apply_overrides(scenario, {**self.base_overrides, **point})
            try:
                calibration.with_overrides(changed.platform.workers, changed.platform.speedup)
            except CalibrationError as exc:
                raise SweepError(str(exc)) from None


def run_sweep(
    spec: SweepSpec, runner: TaskRunner, done: Callable[[], None] | None = None
) -> list[dict[str, Any]]:
    """Every point of ``spec`` with its replications' seeds, wall times and aggregated
    metrics (the order of ``spec.points``)."""
    results = runner.map(spec.tasks(), done)
    points = []
    for i, overrides in enumerate(spec.points):
        reps = sorted((r for r in results if r["point"] == i), key=lambda r: r["replication"])
        points.append(
            {
                "point": i,
                "overrides": overrides,
                "seeds": [r["seed"] for r in reps],
                "wall_s": [round(r["wall_s"], 3) for r in reps],
                "metrics": aggregate([r["metrics"] for r in reps]),
                "replications": [
                    {k: (v if math.isfinite(v) else None) for k, v in r["metrics"].items()}
                    for r in reps
                ],
            }
        )
    return points


def load_inputs(
    scenario_name: str, calibration_name: str | None
) -> tuple[Any, str, dict[str, Any], str]:
    """The scenario (parsed, and its YAML text) and the calibration JSON object, resolved as
    ``shoptwin simulate`` resolves them; errors become SettingsError."""
    from simulator.platform import CalibrationError, parse_calibration, read_calibration_json
    from simulator.scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(scenario_name)
    except ScenarioError as exc:
        raise SettingsError(str(exc)) from None
    text = Path(scenario.source).read_text(encoding="utf-8")
    name = calibration_name or scenario.platform.calibration
    try:
        data, source = read_calibration_json(name, scenario.source)
        parse_calibration(data, source)
    except CalibrationError as exc:
        raise SettingsError(str(exc)) from None
    return scenario, text, data, source


@contextmanager
def progress_bar(total: int | None, desc: str, disable: bool) -> Iterator[Callable[[], None]]:
    """A tqdm bar on stderr counting finished runs; yields the callback that advances it."""
    from tqdm import tqdm

    with tqdm(total=total, unit="run", desc=desc, disable=disable, file=sys.stderr) as bar:

        def advance() -> None:
            bar.update(1)

        yield advance


def common_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--shoppers and --duration-h as overrides (checked like ``shoptwin simulate`` does)."""
    overrides: dict[str, Any] = {}
    if getattr(args, "shoppers", None) is not None:
        if args.shoppers < 0:
            raise SettingsError("--shoppers: must be >= 0")
        overrides["shoppers_per_day"] = args.shoppers
    if getattr(args, "duration_h", None) is not None:
        if not 0 < args.duration_h <= 168:
            raise SettingsError("--duration-h: must be in (0, 168]")
        overrides["duration_h"] = args.duration_h
    return overrides


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """--scheduler, --processes (shared by sweep and capacity plan)."""
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run on this Dask scheduler (e.g. tcp://10.0.0.5:8786) instead of a local pool",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="local pool size (default: the CPU count)",
    )


# -- the command -------------------------------------------------------------------------------

#: Per-RPC metrics shown in the table (the JSON has all of them).
_TABLE_RPC_METRICS = ("p50_ms", "p95_ms", "p99_ms", "throughput_rps")


def _cell(stat: Mapping[str, Any], digits: int = 1) -> str:
    mean = stat.get("mean")
    if mean is None:
        return "-"
    if stat.get("ci_high") is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ±{stat['ci_high'] - mean:.{digits}f}"


def render_points(points: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    """Two tables: per point and RPC the latency percentiles and throughput (mean ±95 % CI
    half-width), per point and service the workers and utilisation."""
    from services.runtime.bench import render_table

    rpc_rows = []
    svc_rows = []
    for point in points:
        label = ", ".join(f"{k}={point['overrides'][k]}" for k in keys) or "(scenario)"
        metrics = point["metrics"]
        rpcs = sorted({k.rsplit(".", 1)[0] for k in metrics if k.endswith(".p99_ms")})
        for rpc in rpcs:
            row: dict[str, Any] = {"point": label, "rpc": rpc}
            for m in _TABLE_RPC_METRICS:
                row[m] = _cell(metrics[f"{rpc}.{m}"], 2 if m == "throughput_rps" else 1)
            rpc_rows.append(row)
        services = sorted({k.split(".", 1)[0] for k in metrics if k.endswith(".utilisation_peak")})
        for svc in services:
            svc_rows.append(
                {
                    "point": label,
                    "service": svc,
                    "workers": int(metrics[f"{svc}.workers"]["mean"]),
                    "util_mean": _cell(metrics[f"{svc}.utilisation_mean"], 3),
                    "util_peak": _cell(metrics[f"{svc}.utilisation_peak"], 3),
                    "on_time": _cell(metrics["orders_on_time_share"], 3),
                }
            )
    return (
        render_table(rpc_rows, ["point", "rpc", *_TABLE_RPC_METRICS])
        + "\n\n"
        + render_table(
            svc_rows, ["point", "service", "workers", "util_mean", "util_peak", "on_time"]
        )
    )


def write_csv(path: Path, points: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> None:
    """Long format: one row per point and metric."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["point", *keys, "metric", "mean", "sd", "ci_low", "ci_high", "n"])
        for point in points:
            for metric, stat in point["metrics"].items():
                writer.writerow(
                    [
                        point["point"],
                        *(point["overrides"][k] for k in keys),
                        metric,
                        *("" if stat[s] is None else stat[s] for s in ("mean", "sd")),
                        *("" if stat[s] is None else stat[s] for s in ("ci_low", "ci_high")),
                        stat["n"],
                    ]
                )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``shoptwin sweep``."""
    parser.add_argument("scenario", help="shipped scenario name or a YAML file")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="a dotted scenario key and its values, e.g. shoppers_per_day=1e5,2e5 or "
        "platform.workers.recommendation=1,2,4 (repeat for a grid of every combination)",
    )
    parser.add_argument(
        "--replications", type=int, default=3, metavar="N", help="runs per grid point (default 3)"
    )
    add_executor_arguments(parser)
    parser.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    parser.add_argument("--shoppers", type=float, default=None, help="override shoppers per day")
    parser.add_argument("--duration-h", type=float, default=None, help="override simulated hours")
    parser.add_argument(
        "--calibration", default=None, metavar="FILE", help="calibration JSON (default: scenario's)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write sweep.json and sweep.csv (default .shoptwin/sweep/NAME)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """``shoptwin sweep``."""
    from simulator.cli import run_record

    if args.replications < 1:
        raise SettingsError("--replications: must be >= 1")
    if args.processes is not None and args.processes < 1:
        raise SettingsError("--processes: must be >= 1")
    if args.seed is not None and args.seed < 0:
        raise SettingsError("--seed: must be >= 0")
    scenario, text, calibration, calibration_source = load_inputs(args.scenario, args.calibration)
    if args.seed is not None:
        scenario = scenario.with_overrides(seed=args.seed)
    try:
        params = [parse_param(p) for p in args.param]
        points = expand_grid(params)
    except SweepError as exc:
        raise SettingsError(str(exc)) from None
    spec = SweepSpec(
        scenario_yaml=text,
        scenario_source=scenario.source,
        calibration=calibration,
        calibration_source=calibration_source,
        seed=scenario.seed,
        points=points,
        replications=args.replications,
        base_overrides=common_overrides(args),
    )
    # Check each --param on its own first, so the message names the --param at fault.
    for param in params:
        try:
            SweepSpec(**{**vars(spec), "points": [{param.key: v} for v in param.values]}).validate()
        except SweepError as exc:
            raise SettingsError(f"--param {param.text}: {exc}") from None
    try:
        spec.validate()
    except SweepError as exc:
        raise SettingsError(f"--param: {exc}") from None
    record = run_record(scenario, "sweep", args)
    keys = [p.key for p in params]
    started = time.perf_counter()
    with (
        TaskRunner(args.scheduler, args.processes) as runner,
        progress_bar(
            len(points) * args.replications, scenario.name, args.no_progress or args.json
        ) as done,
    ):
        results = run_sweep(spec, runner, done)
        executor = runner.description
    wall = time.perf_counter() - started
    payload = {
        "run": {
            **record,
            "calibration": calibration_source,
            "executor": executor,
            "replications": args.replications,
            "replication_seeds": [replication_seed(spec.seed, r) for r in range(spec.replications)],
            "params": {p.key: list(p.values) for p in params},
            "base_overrides": spec.base_overrides,
            "confidence": 0.95,
            "wall_s": round(wall, 2),
        },
        "points": results,
    }
    out = args.out if args.out is not None else Path(".shoptwin/sweep") / scenario.name
    from services.runtime.bench import write_json

    write_json(out / "sweep.json", payload)
    write_csv(out / "sweep.csv", results, keys)
    if args.json:
        print(json.dumps(payload, default=str))
    else:
        print(
            f"sweep {scenario.name}: {len(points)} point(s) x {args.replications} replication(s) "
            f"on {executor} in {wall:.1f} s (mean ±95% CI half-width)\n"
        )
        print(render_points(results, keys))
        print(f"\nwrote {out / 'sweep.json'} and {out / 'sweep.csv'}")
    return 0
