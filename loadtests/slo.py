"""Pass/fail verdicts: per-RPC service-level objectives (error rate, p95, p99) from a YAML file,
checked against a run's statistics (Locust's ``*_stats.csv`` or its in-memory stats).

File format::

    default:                      # applies to every RPC not listed under rpcs
      max_error_rate: 0.001       # failures / requests
      p95_ms: 200
      p99_ms: 500
    rpcs:
      RecommendationService/Recommend: {p95_ms: 50, p99_ms: 120}
      EchoService/Echo: {max_error_rate: 0, p95_ms: 20}

A key left out of an RPC's entry falls back to ``default``; ``null`` switches that check off.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.runtime.settings import SettingsError

DEFAULT_SLO_PATH = Path(__file__).with_name("slo.yaml")
_KEYS = ("max_error_rate", "p95_ms", "p99_ms")


@dataclass(frozen=True)
class Objective:
    """Thresholds of one RPC; ``None`` means not checked."""

    max_error_rate: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None


@dataclass(frozen=True)
class SloFile:
    default: Objective
    rpcs: dict[str, Objective]

    def objective(self, rpc: str) -> Objective:
        return self.rpcs.get(rpc, self.default)


@dataclass(frozen=True)
class RpcStats:
    """What a run measured for one RPC (Locust's numbers: percentiles in milliseconds)."""

    name: str
    requests: int
    failures: int
    p95_ms: float
    p99_ms: float
    rps: float = math.nan
    p50_ms: float = math.nan

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Check:
    """One threshold compared with one measurement."""

    rpc: str
    metric: str
    measured: float
    limit: float

    @property
    def passed(self) -> bool:
        return not math.isnan(self.measured) and self.measured <= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {
            "rpc": self.rpc,
            "metric": self.metric,
            "measured": round(self.measured, 4),
            "limit": self.limit,
            "verdict": "pass" if self.passed else "FAIL",
        }


def _objective(raw: Any, where: str, base: Objective | None) -> Objective:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SettingsError(f"{where}: expected a mapping of {', '.join(_KEYS)}")
    unknown = set(raw) - set(_KEYS)
    if unknown:
        raise SettingsError(f"{where}.{sorted(unknown)[0]}: unknown key; known: {', '.join(_KEYS)}")
    values: dict[str, float | None] = {}
    for key in _KEYS:
        if key in raw:
            value = raw[key]
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise SettingsError(f"{where}.{key}: expected a number >= 0, got {value!r}")
                value = float(value)
            values[key] = value
        else:
            values[key] = getattr(base, key) if base is not None else None
    return Objective(**values)


def parse_slo(data: Any, source: str = "SLO file") -> SloFile:
    """Validate a parsed SLO document; errors name the key at fault."""
    if not isinstance(data, Mapping):
        raise SettingsError(f"{source}: expected a mapping with 'default' and 'rpcs'")
    unknown = set(data) - {"default", "rpcs"}
    if unknown:
        raise SettingsError(f"{source}: unknown key {sorted(unknown)[0]!r}")
    default = _objective(data.get("default"), f"{source}: default", None)
    rpcs_raw = data.get("rpcs") or {}
    if not isinstance(rpcs_raw, Mapping):
        raise SettingsError(f"{source}: rpcs: expected a mapping of RPC name to thresholds")
    rpcs = {
        str(name): _objective(raw, f"{source}: rpcs.{name}", default)
        for name, raw in rpcs_raw.items()
    }
    return SloFile(default, rpcs)


def load_slo(path: Path | None = None) -> SloFile:
    """Read and validate an SLO file (the packaged ``slo.yaml`` without one)."""
    path = path or DEFAULT_SLO_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"--slo: cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"--slo: {path} is not valid YAML: {exc}") from None
    return parse_slo(data, f"--slo {path}")


def evaluate(stats: Iterable[RpcStats], slo: SloFile) -> list[Check]:
    """Every check of every RPC that received requests."""
    checks: list[Check] = []
    for rpc in stats:
        if rpc.requests == 0:
            continue
        objective = slo.objective(rpc.name)
        if objective.max_error_rate is not None:
            checks.append(Check(rpc.name, "error_rate", rpc.error_rate, objective.max_error_rate))
        # Percentiles of failures-only RPCs are meaningless; the error rate already fails them.
        if rpc.requests > rpc.failures:
            if objective.p95_ms is not None:
                checks.append(Check(rpc.name, "p95_ms", rpc.p95_ms, objective.p95_ms))
            if objective.p99_ms is not None:
                checks.append(Check(rpc.name, "p99_ms", rpc.p99_ms, objective.p99_ms))
    return checks


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_locust_stats_csv(path: Path) -> list[RpcStats]:
    """Per-request-name rows of Locust's ``<prefix>_stats.csv`` (the Aggregated row left out)."""
    rows: list[RpcStats] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") == "Aggregated" or not row.get("Type"):
                continue
            rows.append(
                RpcStats(
                    name=row["Name"],
                    requests=int(row["Request Count"]),
                    failures=int(row["Failure Count"]),
                    p95_ms=_number(row["95%"]),
                    p99_ms=_number(row["99%"]),
                    rps=_number(row.get("Requests/s", "")),
                    p50_ms=_number(row.get("50%", "")),
                )
            )
    return rows
