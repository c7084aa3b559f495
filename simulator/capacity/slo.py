"""Service-level objectives for ``shoptwin capacity plan``: ``TARGET.METRIC<VALUE[UNIT]``.

``TARGET`` is an RPC alias (``recommend``, ``classify``, ``submit_order``, ...), an RPC as
``service.Rpc`` (``recommendation.SimilarItems``) or a service (``telemetry``: then a latency
metric applies to its worst RPC). ``METRIC`` is ``p50``, ``p95``, ``p99`` or ``mean`` (latency,
with ``ms`` or ``s``), ``error_rate`` (a fraction or ``%``: calls the 5G model dropped, the only
errors model mode has) or ``utilisation`` (the busiest minute of the service's workers, a
fraction or ``%``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Short names of the RPCs model mode calls.
ALIASES: dict[str, str] = {
    "recommend": "recommendation.Recommend",
    "similar_items": "recommendation.SimilarItems",
    "similar": "recommendation.SimilarItems",
    "record_feedback": "recommendation.RecordFeedback",
    "feedback": "recommendation.RecordFeedback",
    "classify": "intent.Classify",
    "submit_order": "dispatch.SubmitOrder",
    "report_stop": "dispatch.ReportStop",
    "ingest": "telemetry.Ingest",
}

#: The RPCs model mode calls, per service (GetOrderStatus and the others exist on the services
#: but no simulated shopper or van calls them).
MODEL_RPCS: dict[str, tuple[str, ...]] = {
    "recommendation": ("Recommend", "SimilarItems", "RecordFeedback"),
    "intent": ("Classify",),
    "dispatch": ("SubmitOrder", "ReportStop"),
    "telemetry": ("Ingest",),
}

_LATENCY = {"p50": "p50_ms", "p95": "p95_ms", "p99": "p99_ms", "mean": "mean_ms"}
_OTHER = {
    "error_rate": "error_rate",
    "utilisation": "utilisation_peak",
    "utilization": "utilisation_peak",
}
_PATTERN = re.compile(
    r"^\s*(?P<target>[A-Za-z_][\w.]*)\.(?P<metric>[A-Za-z_0-9]+)\s*(?P<op><=?)\s*"
    r"(?P<value>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>ms|s|%)?\s*$"
)


class SloError(ValueError):
    """A --slo that cannot be parsed; the message quotes it."""


@dataclass(frozen=True)
class Slo:
    """One objective: ``metric`` of ``rpcs`` (all of one ``service``) below ``limit``."""

    text: str
    service: str
    #: Metric prefixes (``recommendation.Recommend``); several for a service-level latency SLO
    #: (the worst of them counts).
    rpcs: tuple[str, ...]
    #: Key suffix in the sweep's metrics: ``p99_ms``, ``error_rate``, ``utilisation_peak``, ...
    metric: str
    #: In the metric's own unit (ms for latency, a fraction for rates and utilisation).
    limit: float
    inclusive: bool = False

    @property
    def unit(self) -> str:
        return "ms" if self.metric.endswith("_ms") else ""

    def keys(self) -> list[str]:
        """The sweep metric keys this SLO reads."""
        if self.metric == "utilisation_peak":
            return [f"{self.service}.utilisation_peak"]
        return [f"{rpc}.{self.metric}" for rpc in self.rpcs]

    def value(self, metrics: Mapping[str, Mapping[str, Any]], stat: str = "mean") -> float | None:
        """``stat`` (``mean``, ``ci_high``) of the metric at a sweep point; the worst RPC for a
        service-level SLO; ``None`` when no RPC had calls."""
        values = []
        for key in self.keys():
            entry = metrics.get(key)
            if entry is None or entry.get("mean") is None:
                continue
            v = entry.get(stat)
            values.append(entry["mean"] if v is None else v)
        return max(values) if values else None

    def met_by(self, value: float) -> bool:
        return value <= self.limit if self.inclusive else value < self.limit

    def margin(self, value: float) -> float:
        """Headroom: the share of the limit left, 1 - value / limit (negative when missed)."""
        return 1.0 - value / self.limit

    def describe(self) -> str:
        op = "<=" if self.inclusive else "<"
        single = len(self.rpcs) == 1 and self.metric != "utilisation_peak"
        name = self.rpcs[0] if single else self.service
        what = self.metric.removesuffix("_ms").replace("utilisation_peak", "utilisation")
        limit = f"{self.limit:g} ms" if self.unit == "ms" else f"{self.limit:g}"
        return f"{name}.{what} {op} {limit}"


def _target(text: str, target: str, services: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """(service, rpc prefixes) of a target, or SloError naming the --slo."""
    lowered = target.lower()
    if lowered in ALIASES:
        full = ALIASES[lowered]
        return full.split(".", 1)[0], (full,)
    if "." in target:
        service, rpc = target.split(".", 1)
        if service in MODEL_RPCS and rpc in MODEL_RPCS[service]:
            if service not in services:
                raise SloError(f"--slo {text!r}: the calibration has no service {service!r}")
            return service, (target,)
        known = ", ".join(f"{s}.{r}" for s, rpcs in MODEL_RPCS.items() for r in rpcs)
        raise SloError(f"--slo {text!r}: unknown RPC {target!r}; model mode calls: {known}")
    if target in MODEL_RPCS:
        if target not in services:
            raise SloError(f"--slo {text!r}: the calibration has no service {target!r}")
        return target, tuple(f"{target}.{r}" for r in MODEL_RPCS[target])
    raise SloError(
        f"--slo {text!r}: unknown target {target!r}; use an alias "
        f"({', '.join(sorted(ALIASES))}), a service ({', '.join(MODEL_RPCS)}) or service.Rpc"
    )


def parse_slo(text: str, services: Sequence[str] = tuple(MODEL_RPCS)) -> Slo:
    """``recommend.p99<200ms`` into an :class:`Slo`; ``SloError`` quotes the --slo."""
    match = _PATTERN.match(text)
    if match is None:
        raise SloError(
            f"--slo {text!r}: expected TARGET.METRIC<VALUE[UNIT], e.g. 'recommend.p99<200ms' "
            "or 'telemetry.utilisation<70%'"
        )
    metric_name = match["metric"].lower()
    unit = match["unit"]
    value = float(match["value"])
    service, rpcs = _target(text, match["target"], services)
    if metric_name in _LATENCY:
        if unit not in ("ms", "s"):
            raise SloError(f"--slo {text!r}: a latency needs a unit, ms or s (e.g. 200ms)")
        limit = value * 1000.0 if unit == "s" else value
        metric = _LATENCY[metric_name]
    elif metric_name in _OTHER:
        if unit in ("ms", "s"):
            raise SloError(f"--slo {text!r}: {metric_name} is a fraction (0.7) or percent (70%)")
        limit = value / 100.0 if unit == "%" else value
        if not 0 < limit <= 1:
            raise SloError(f"--slo {text!r}: {metric_name} must be in (0, 1] (or (0, 100]%)")
        metric = _OTHER[metric_name]
    else:
        known = ", ".join([*_LATENCY, "error_rate", "utilisation"])
        raise SloError(f"--slo {text!r}: unknown metric {metric_name!r}; known: {known}")
    if not math.isfinite(limit) or limit <= 0:
        raise SloError(f"--slo {text!r}: the limit must be > 0")
    return Slo(
        text=text,
        service=service,
        rpcs=rpcs,
        metric=metric,
        limit=limit,
        inclusive=match["op"] == "<=",
    )
