"""The platform in model mode: each service a multi-server queue with a service-time
distribution per RPC and, where the service batches, a batcher in front of its workers.

Service times come from a calibration file (``calibration/default.json`` ships with estimates;
the services' ``bench`` commands write measured ones). The same ``Station`` class runs the
queueing-theory validation, so ``--validate`` checks the code model mode uses.
"""

from __future__ import annotations

import itertools
import json
import math
from array import array
from collections import defaultdict, deque
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from heapq import heappush
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import simpy
from simpy.events import NORMAL

DISTRIBUTIONS = ("exponential", "deterministic", "lognormal")
VARIABILITY = ("fixed", "proportional", "averaged")
WAKE = ("constant", "exponential")
#: How the event loop's time per call (``Batching.loop_ms``) is modelled.
LOOP = ("extends", "queue")
#: Keys of a calibration's ladder rows; ``batch_size`` and ``batch_ms`` (the service's own mean
#: batch size and batch time at that concurrency) only where its metrics were read.
LOAD_DEPENDENCE_KEYS = (
    "concurrency",
    "throughput",
    "mean_ms",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "batch_size",
    "batch_ms",
)


#: At most this many extensions of a batch for the event loop's share (``Batching.loop_ms``).
MAX_LOOP_EXTENSIONS = 8


class CalibrationError(ValueError):
    """A calibration file is wrong; the message names the key."""


@dataclass(frozen=True)
class RpcCalibration:
    """Service time of one RPC: ``distribution`` with mean ``mean_ms`` (and coefficient of
    variation ``cv`` for lognormal), plus ``per_item_ms`` per item of the request (readings in
    a telemetry batch, messages in a classify batch)."""

    distribution: str = "lognormal"
    mean_ms: float = 1.0
    cv: float = 0.5
    per_item_ms: float = 0.0
    #: Time of a call outside the service's queue (client, network, gRPC framing), added to its
    #: latency but never queued; half before the queue, half after. Measured as the bare echo
    #: RPC's latency by ``shoptwin capacity calibrate``.
    overhead_ms: float = 0.0
    #: The overhead's measured distribution: its quantiles at evenly spaced probabilities from
    #: 0 to 1 (ms). When present each call draws its overhead from it (inverse CDF, linear
    #: between quantiles) instead of taking ``overhead_ms``: the open-loop echo's spread is
    #: most of a light-load call's tail.
    overhead_quantiles_ms: tuple[float, ...] = ()
    #: The measured closed-loop ladder the numbers were fitted from (for the record; rows of
    #: concurrency, throughput, mean/p50/p95/p99 latency).
    load_dependence: tuple[Mapping[str, float], ...] = ()
    #: Measured mean time (ms) of a batch of ``n`` items, as ``(n, ms)`` points with growing
    #: ``n``. When present (and the service batches) it replaces ``mean_ms + per_item_ms·n``:
    #: linear between points, the last segment's slope beyond the last point.
    batch_ms: tuple[tuple[float, float], ...] = ()

    def batch_mean_ms(self, items: float) -> float:
        """Mean time of a batch of ``items`` items (ms)."""
        points = self.batch_ms
        if not points:
            return self.mean_ms + self.per_item_ms * items
        if len(points) == 1 or items <= points[0][0]:
            return points[0][1]
        for (n0, t0), (n1, t1) in itertools.pairwise(points):
            if items <= n1:
                return t0 + (t1 - t0) * (items - n0) / (n1 - n0)
        (n0, t0), (n1, t1) = points[-2], points[-1]
        return t1 + max(t1 - t0, 0.0) / (n1 - n0) * (items - n1)


@dataclass(frozen=True)
class Batching:
    """A batcher: a free worker takes up to ``max_batch`` queued requests, waiting up to
    ``max_wait_ms`` for more when fewer are queued. With ``grow_to_previous`` (the
    recommendation service's batcher) it waits only after a batch of more than one request,
    and only until as many requests as that batch held are queued or the oldest has been
    queued ``max_wait_ms``.

    A batch of ``n`` items takes ``a + b·n`` with ``a`` drawn from the RPC's distribution
    (``mean_ms``, ``cv``) and ``b`` its ``per_item_ms``, or ``T(n)`` from the RPC's measured
    ``batch_ms`` table when it has one (then ``fixed`` means exactly ``T(n)``).
    ``variability`` says where the noise goes: ``fixed`` (only ``a`` varies),
    ``proportional`` (the whole batch time is scaled by one draw of mean 1 and the RPC's
    ``cv``) or ``averaged`` (the batch time is lognormal with mean ``T(n)`` and the lone
    call's ``cv`` shrunk by ``k ** cv_exponent``, ``k = T(n) / T(1)`` being how many lone
    calls the batch lasts: stalls from CPU contention partly average out over a long batch)."""

    max_batch: int = 32
    max_wait_ms: float = 2.0
    variability: str = "fixed"
    grow_to_previous: bool = False
    #: How fast an ``averaged`` batch's cv shrinks with its length: ``cv * k ** -cv_exponent``.
    #: 0.5 (files without the key) is independent noise per lone call's worth of work. Batches
    #: under open-loop load average out less (recommendation's about 0.3-0.4 on this VM);
    #: ``calibrate`` reads it from the service's batch times by size
    #: (``shoptwin_batch_duration_by_size_seconds``). The long, slow batches behind a queue set
    #: the p95 near a knee (docs/capacity.md).
    cv_exponent: float = 0.5
    #: Extra time of a batch that starts on an idle batcher (the worker thread and the event
    #: loop woken from sleep). Measured on this VM it is milliseconds: open-loop calls at light
    #: load are much slower than back-to-back closed-loop ones.
    wake_ms: float = 0.0
    #: How the wake-up is drawn: ``constant`` (exactly ``wake_ms``; files without the key) or
    #: ``exponential`` with mean ``wake_ms``. Waking a sleeping thread, or winning the GIL
    #: back from the event loop, is a wait of random length: with a constant wake-up the
    #: model put light-load latencies in too narrow a band (its p95 10-15 % low at 10-25 %
    #: of a knee in every validate run; see docs/capacity.md).
    wake: str = "constant"
    #: Event-loop time per call (receive, parse, respond: what the bare echo server spends on
    #: a call) that the batch waits for: through the GIL when the batch runs in a thread of the
    #: server (intent), through the cores when it runs in a process of its own on a busy
    #: machine (recommendation's ranking process). Every call arriving while a batch runs
    #: lengthens that batch by ``loop_ms`` (and calls arriving in the extra time lengthen it
    #: again). A closed-loop ladder never shows this (its event
    #: loop idles while the batch runs, all callers being in it), open-loop load does: without
    #: it the model put recommendation's knee 10-20 % too high and its p95 25-35 % too low
    #: at two thirds of the knee. That holds for batch times inferred from the ladder's
    #: latencies (``loop: extends``).
    loop_ms: float = 0.0
    #: How ``loop_ms`` is spent: ``extends`` (files without the key: calls arriving during a
    #: batch lengthen it, as above) or ``queue``: each worker's event loop is a server of its
    #: own, first come first served, that every batched call passes on its way in (half of
    #: ``loop_ms``) and on its way out (the other half). That half is part of the call's
    #: overhead, not added to it: at light load a call finds the loop idle and takes exactly
    #: as long as without it; under load calls wait for the loop, and they reach the batcher
    #: in the bunches the loop releases them in. The batcher is a coroutine on the same loop:
    #: woken from a wait (for a call, or for its batch to grow) it starts the batch after the
    #: calls already waiting for the loop. A calibration from the service's own batch times
    #: uses it (those times already hold the loop's competition for the cores, but not the
    #: calls' wait for the loop: docs/capacity.md "Calibrate").
    loop: str = "extends"
    #: ``loop: queue`` only: a call's pass through the event loop that starts while that
    #: worker's batch runs takes ``1 + loop_contention`` times as long. The batch's own
    #: process (recommendation's ranking process) or thread (intent's, through the GIL) holds
    #: a core then, and the loop shares the other with the load generator, so the loop is
    #: slowest exactly when calls pile up behind a batch. ``calibrate`` fits it to its open-loop
    #: runs' p95 (docs/capacity.md "Calibrate"); 0 is a loop that runs at its light-load
    #: speed at every load.
    loop_contention: float = 0.0
    #: RPCs that go through the batcher; empty means all of the service's RPCs. The others are
    #: served one by one by ``workers`` plain servers (e.g. RecordFeedback beside a batched
    #: Recommend).
    rpcs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceCalibration:
    workers: int
    rpcs: Mapping[str, RpcCalibration]
    batching: Batching | None = None


@dataclass(frozen=True)
class Calibration:
    """Service models of the whole platform, with where the numbers came from."""

    services: Mapping[str, ServiceCalibration]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def with_overrides(self, workers: Mapping[str, int], speedup: float = 1.0) -> Calibration:
        """Workers per service replaced; every service time divided by ``speedup``."""
        services = {}
        for name, svc in self.services.items():
            rpcs = {
                rpc: replace(
                    r,
                    mean_ms=r.mean_ms / speedup,
                    per_item_ms=r.per_item_ms / speedup,
                    batch_ms=tuple((n, ms / speedup) for n, ms in r.batch_ms),
                )
                for rpc, r in svc.rpcs.items()
            }
            batching = svc.batching
            if batching is not None and batching.loop_ms:
                # The event loop's time is the service's CPU too (the overhead and the
                # wake-up are the machine's and stay).
                batching = replace(batching, loop_ms=batching.loop_ms / speedup)
            services[name] = replace(
                svc, workers=workers.get(name, svc.workers), rpcs=rpcs, batching=batching
            )
        for name in workers:
            if name not in self.services:
                raise CalibrationError(
                    f"platform.workers.{name}: unknown service; known: {', '.join(self.services)}"
                )
        return replace(self, services=services)


def _number(value: Any, key: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CalibrationError(f"{key}: expected a number, got {value!r}")
    if value < minimum:
        raise CalibrationError(f"{key}: must be >= {minimum}")
    return float(value)


def _fraction(value: Any, key: str) -> float:
    number = _number(value, key)
    if number > 1.0:
        raise CalibrationError(f"{key}: must be <= 1")
    return number


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise CalibrationError(f"{key}: expected true or false")
    return value


def _load_dependence(value: Any, key: str) -> tuple[Mapping[str, float], ...]:
    if not isinstance(value, list):
        raise CalibrationError(f"{key}: expected a list of objects")
    rows = []
    for index, row in enumerate(value):
        if not isinstance(row, dict):
            raise CalibrationError(f"{key}[{index}]: expected an object")
        rows.append(
            {
                name: _number(row.get(name), f"{key}[{index}].{name}")
                for name in LOAD_DEPENDENCE_KEYS
                if name in row or name == "concurrency"
            }
        )
    return tuple(rows)


def _rpc_names(value: Any, key: str, known: Mapping[str, Any]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CalibrationError(f"{key}: expected a list of RPC names")
    for name in value:
        if name not in known:
            raise CalibrationError(f"{key}: unknown RPC {name!r}; known: {', '.join(known)}")
    return tuple(value)


def _batch_points(value: Any, key: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list):
        raise CalibrationError(f"{key}: expected a list of [items, ms] pairs")
    points: list[tuple[float, float]] = []
    for index, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            raise CalibrationError(f"{key}[{index}]: expected an [items, ms] pair")
        n = _number(pair[0], f"{key}[{index}][0]", 1)
        ms = _number(pair[1], f"{key}[{index}][1]")
        if points and n <= points[-1][0]:
            raise CalibrationError(f"{key}[{index}][0]: items must grow from pair to pair")
        points.append((n, ms))
    return tuple(points)


def _quantiles(value: Any, key: str) -> tuple[float, ...]:
    """Quantiles at evenly spaced probabilities: none, or at least two, non-decreasing."""
    if not isinstance(value, list):
        raise CalibrationError(f"{key}: expected a list of numbers")
    if not value:
        return ()
    if len(value) < 2:
        raise CalibrationError(f"{key}: expected at least two quantiles (0 and 1)")
    numbers = tuple(_number(v, f"{key}[{i}]") for i, v in enumerate(value))
    if any(b < a for a, b in itertools.pairwise(numbers)):
        raise CalibrationError(f"{key}: quantiles must not decrease")
    return numbers


class OverheadSampler:
    """Per-call overhead (seconds): the constant ``overhead_ms``, or draws from the measured
    quantiles (blocks of 4096 through one ``np.interp``)."""

    BLOCK = 4096

    def __init__(self, calibration: RpcCalibration, rng: np.random.Generator) -> None:
        self.mean_s = calibration.overhead_ms / 1000.0
        self._quantiles = np.asarray(calibration.overhead_quantiles_ms, dtype=float) / 1000.0
        self._grid = np.linspace(0.0, 1.0, len(self._quantiles))
        self._rng = rng
        self._buffer: list[float] = []
        self._drawn = self._quantiles.size > 0
        #: Whether calls have any overhead (plain attributes: read for every call).
        self.active = self.mean_s > 0 or self._drawn

    def sample(self) -> float:
        if not self._drawn:
            return self.mean_s
        if not self._buffer:
            u = self._rng.random(self.BLOCK)
            self._buffer = np.interp(u, self._grid, self._quantiles).tolist()
        return self._buffer.pop()


def calibration_to_json(calibration: Calibration) -> dict[str, Any]:
    """The JSON object of a calibration (``parse_calibration`` reads it back)."""
    services: dict[str, Any] = {}
    for name, svc in calibration.services.items():
        rpcs: dict[str, Any] = {}
        for rpc, r in svc.rpcs.items():
            entry: dict[str, Any] = {
                "distribution": r.distribution,
                "mean_ms": r.mean_ms,
                "cv": r.cv,
                "per_item_ms": r.per_item_ms,
            }
            if r.overhead_ms:
                entry["overhead_ms"] = r.overhead_ms
            if r.overhead_quantiles_ms:
                entry["overhead_quantiles_ms"] = list(r.overhead_quantiles_ms)
            if r.batch_ms:
                entry["batch_ms"] = [[n, ms] for n, ms in r.batch_ms]
            if r.load_dependence:
                entry["load_dependence"] = [dict(row) for row in r.load_dependence]
            rpcs[rpc] = entry
        batching = None
        if svc.batching is not None:
            batching = {
                "max_batch": svc.batching.max_batch,
                "max_wait_ms": svc.batching.max_wait_ms,
                "variability": svc.batching.variability,
            }
            if svc.batching.grow_to_previous:
                batching["grow_to_previous"] = True
            if svc.batching.cv_exponent != 0.5:
                batching["cv_exponent"] = svc.batching.cv_exponent
            if svc.batching.wake_ms:
                batching["wake_ms"] = svc.batching.wake_ms
            if svc.batching.wake != "constant":
                batching["wake"] = svc.batching.wake
            if svc.batching.loop_ms:
                batching["loop_ms"] = svc.batching.loop_ms
            if svc.batching.loop != "extends":
                batching["loop"] = svc.batching.loop
            if svc.batching.loop_contention:
                batching["loop_contention"] = svc.batching.loop_contention
            if svc.batching.rpcs:
                batching["rpcs"] = list(svc.batching.rpcs)
        services[name] = {"workers": svc.workers, "batching": batching, "rpcs": rpcs}
    return {"version": 1, "provenance": dict(calibration.provenance), "services": services}


def parse_calibration(data: Mapping[str, Any], source: str = "calibration") -> Calibration:
    """A calibration from its JSON object; ``CalibrationError`` names the key at fault."""
    services_raw = data.get("services")
    if not isinstance(services_raw, dict) or not services_raw:
        raise CalibrationError(f"{source}: services: expected a non-empty object")
    services: dict[str, ServiceCalibration] = {}
    for name, raw in services_raw.items():
        key = f"{source}: services.{name}"
        if not isinstance(raw, dict):
            raise CalibrationError(f"{key}: expected an object")
        workers = int(_number(raw.get("workers", 1), f"{key}.workers", 1))
        rpcs: dict[str, RpcCalibration] = {}
        rpcs_raw = raw.get("rpcs")
        if not isinstance(rpcs_raw, dict) or not rpcs_raw:
            raise CalibrationError(f"{key}.rpcs: expected a non-empty object")
        for rpc, r in rpcs_raw.items():
            rkey = f"{key}.rpcs.{rpc}"
            if not isinstance(r, dict):
                raise CalibrationError(f"{rkey}: expected an object")
            dist = r.get("distribution", "lognormal")
            if dist not in DISTRIBUTIONS:
                raise CalibrationError(f"{rkey}.distribution: one of {', '.join(DISTRIBUTIONS)}")
            rpcs[rpc] = RpcCalibration(
                distribution=dist,
                mean_ms=_number(r.get("mean_ms"), f"{rkey}.mean_ms"),
                cv=_number(r.get("cv", 0.5), f"{rkey}.cv"),
                per_item_ms=_number(r.get("per_item_ms", 0.0), f"{rkey}.per_item_ms"),
                overhead_ms=_number(r.get("overhead_ms", 0.0), f"{rkey}.overhead_ms"),
                overhead_quantiles_ms=_quantiles(
                    r.get("overhead_quantiles_ms", []), f"{rkey}.overhead_quantiles_ms"
                ),
                load_dependence=_load_dependence(
                    r.get("load_dependence", []), f"{rkey}.load_dependence"
                ),
                batch_ms=_batch_points(r.get("batch_ms", []), f"{rkey}.batch_ms"),
            )
        batching = None
        if raw.get("batching") is not None:
            b = raw["batching"]
            if not isinstance(b, dict):
                raise CalibrationError(f"{key}.batching: expected an object or null")
            variability = b.get("variability", "fixed")
            if variability not in VARIABILITY:
                raise CalibrationError(
                    f"{key}.batching.variability: one of {', '.join(VARIABILITY)}"
                )
            wake = b.get("wake", "constant")
            if wake not in WAKE:
                raise CalibrationError(f"{key}.batching.wake: one of {', '.join(WAKE)}")
            loop = b.get("loop", "extends")
            if loop not in LOOP:
                raise CalibrationError(f"{key}.batching.loop: one of {', '.join(LOOP)}")
            batching = Batching(
                max_batch=int(_number(b.get("max_batch", 32), f"{key}.batching.max_batch", 1)),
                max_wait_ms=_number(b.get("max_wait_ms", 0.0), f"{key}.batching.max_wait_ms"),
                variability=variability,
                grow_to_previous=_flag(
                    b.get("grow_to_previous", False), f"{key}.batching.grow_to_previous"
                ),
                cv_exponent=_fraction(b.get("cv_exponent", 0.5), f"{key}.batching.cv_exponent"),
                wake_ms=_number(b.get("wake_ms", 0.0), f"{key}.batching.wake_ms"),
                wake=wake,
                loop_ms=_number(b.get("loop_ms", 0.0), f"{key}.batching.loop_ms"),
                loop=loop,
                loop_contention=_number(
                    b.get("loop_contention", 0.0), f"{key}.batching.loop_contention"
                ),
                rpcs=_rpc_names(b.get("rpcs", []), f"{key}.batching.rpcs", rpcs),
            )
            if batching.loop_contention and (loop != "queue" or not batching.loop_ms):
                raise CalibrationError(
                    f"{key}.batching.loop_contention: needs loop: queue and loop_ms > 0"
                )
        services[name] = ServiceCalibration(workers, rpcs, batching)
    return Calibration(services, dict(data.get("provenance") or {}))


def shipped_calibrations() -> list[str]:
    """Names of the calibration files shipped in ``simulator/calibration/``."""
    folder = resources.files("simulator").joinpath("calibration")
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def read_calibration_json(
    path: str | Path | None = None, scenario_source: str | None = None
) -> tuple[dict[str, Any], str]:
    """The JSON object of a calibration and where it came from: a shipped file by name
    (``default``, ``measured-2core``), a JSON file, or, when that path does not exist and
    ``scenario_source`` is given, the file of that name next to the scenario."""
    name = "default" if path is None else str(path)
    if "/" not in name and not name.endswith(".json") and name in shipped_calibrations():
        text = resources.files("simulator").joinpath(f"calibration/{name}.json").read_text("utf-8")
        source = f"calibration/{name}.json"
    else:
        file = Path(name)
        if scenario_source and not file.is_absolute() and not file.exists():
            file = Path(scenario_source).parent / name
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise CalibrationError(f"calibration: cannot read {file}: {exc.strerror}") from None
        source = str(file)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{source}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"{source}: expected a JSON object")
    return data, source


def load_calibration(
    path: str | Path | None = None, scenario_source: str | None = None
) -> Calibration:
    """The calibration ``read_calibration_json`` finds, parsed."""
    data, source = read_calibration_json(path, scenario_source)
    return parse_calibration(data, source)


class ServiceTimeSampler:
    """Service times of one RPC in seconds, drawn in blocks (one numpy call per 4096)."""

    BLOCK = 4096

    def __init__(
        self, calibration: RpcCalibration, rng: np.random.Generator, cv_exponent: float = 0.5
    ) -> None:
        self.calibration = calibration
        self.rng = rng
        #: ``Batching.cv_exponent`` of an ``averaged`` batch.
        self.cv_exponent = cv_exponent
        self.per_item_s = calibration.per_item_ms / 1000.0
        self.mean_s = calibration.mean_ms / 1000.0
        self._buffer: list[float] = []
        self._unit: ServiceTimeSampler | None = None
        self._normals: list[float] = []
        self._batch_table = bool(calibration.batch_ms)
        #: ``averaged_sample``'s mean and sigma per batch size (sigma ``None``: no noise).
        self._averaged: dict[int, tuple[float, float | None]] = {}

    def _refill(self) -> None:
        c = self.calibration
        mean = c.mean_ms / 1000.0
        if c.distribution == "deterministic" or mean == 0:
            block = np.full(self.BLOCK, mean)
        elif c.distribution == "exponential":
            block = self.rng.exponential(mean, self.BLOCK)
        else:
            sigma2 = math.log1p(c.cv**2)
            block = self.rng.lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2), self.BLOCK)
        self._buffer = block.tolist()
        self._buffer.reverse()

    def sample(self, items: int = 1) -> float:
        """One service time for a request of ``items`` items (seconds)."""
        buffer = self._buffer
        if not buffer:
            self._refill()
            buffer = self._buffer
        return buffer.pop() + self.per_item_s * items

    def batch_mean_s(self, items: int) -> float:
        """Mean time of a batch of ``items`` (s): the measured table, else ``a + b·items``."""
        if self._batch_table:
            return self.calibration.batch_mean_ms(items) / 1000.0
        return self.mean_s + self.per_item_s * items

    def averaged_sample(self, items: int) -> float:
        """A batch of ``items``: lognormal, mean ``T(items)``, cv ``cv * k ** -cv_exponent``
        where ``k = T(items) / T(1)`` lone calls last as long as the batch."""
        shape = self._averaged.get(items)
        if shape is None:
            # Batch sizes repeat: their shapes are worked out once.
            shape = self._averaged[items] = self._averaged_shape(items)
        mean, sigma = shape
        if sigma is None:
            return mean
        if not self._normals:
            self._normals = self.rng.standard_normal(self.BLOCK).tolist()
        return mean * math.exp(sigma * self._normals.pop() - sigma * sigma / 2)

    def _averaged_shape(self, items: int) -> tuple[float, float | None]:
        mean = self.batch_mean_s(items)
        lone = self.batch_mean_s(1)
        if mean <= 0 or lone <= 0:
            return max(mean, 0.0), None
        cv = self.calibration.cv * max(mean / lone, 1.0) ** -self.cv_exponent
        return mean, math.sqrt(math.log1p(cv * cv))

    def unit_sample(self) -> float:
        """A factor of mean 1 with this RPC's distribution and ``cv`` (proportional noise)."""
        if self._unit is None:
            unit = replace(self.calibration, mean_ms=1000.0, per_item_ms=0.0)
            self._unit = ServiceTimeSampler(unit, self.rng)
        return self._unit.sample(0)


@dataclass
class RpcStats:
    """Per-RPC record of a run: completion times, latencies (network + wait + service)."""

    completed_at: array = field(default_factory=lambda: array("d"))
    latency_s: array = field(default_factory=lambda: array("d"))
    failed_network: int = 0

    def add(self, completed_at: float, latency_s: float) -> None:
        """Record one call."""
        self.completed_at.append(completed_at)
        self.latency_s.append(latency_s)


class CallbackTimeout(simpy.Timeout):
    """A ``simpy.Timeout`` made with its one callback: the same event, on the same heap with
    the same priority, as ``env.timeout(delay)`` followed by ``.callbacks.append(callback)``,
    for code that waits through callbacks instead of processes (a bound-class call and a
    lookup less on a path taken for every event)."""

    def __init__(
        self, env: simpy.Environment, delay: float, callback: Callable[[simpy.Event], None]
    ) -> None:
        # simpy.Timeout.__init__, which inlines Event.__init__ the same way, plus the callback.
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        self.env = env
        self.callbacks = [callback]
        self._value = None
        self._delay = delay
        self._ok = True
        env.schedule(self, NORMAL, delay)


class Rearmed(simpy.Event):
    """One event object an owner that waits for one thing at a time (a session, a request, a
    batch worker) schedules again and again, each time with one callback: ``after(delay,
    callback)`` puts it on SimPy's heap exactly as ``env.timeout(delay)`` with the callback
    appended would (time, ``NORMAL`` priority, the next event id), and SimPy's ``step``
    processes it like any timeout. Only making and freeing an event object per wait is saved:
    a third of what a timeout with a callback costs the model (microbenchmark: 1.33 against
    1.06 µs per event, callback included). An owner must not call ``after`` while the event
    is still on the heap (``after`` checks).

    The owner may be the event itself (``Request`` and ``_BatchWorker`` are subclasses): then
    its callbacks are its class's plain functions, which SimPy calls with the event, that is
    with the owner (``after(delay, Request.reach)``), and no bound method is made and freed
    per wait. The one-element callback list is reused as well (SimPy takes it off the event
    before calling it, and a callback that schedules again only replaces its one element):
    the list keeps the last callback, so a callback that holds the owner (a bound method, a
    closure) keeps it alive until the cyclic collector runs; the model's owners live for the
    run or pass their class's functions."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        # Not on the heap (what SimPy sets after processing an event).
        self.callbacks = None  # type: ignore[assignment]
        self._value = None
        self._ok = True
        # SimPy's heap and event counter, as ``Environment.schedule`` uses them.
        self._heap = env._queue
        self._eid: Iterator[int] = env._eid
        self._one_callback: list[Callable[[Any], None]] = [_trigger_nothing]

    def after(self, delay: float, callback: Callable[[Any], None]) -> None:
        """Fire ``callback(self)`` ``delay`` seconds from now."""
        if delay < 0 or self.callbacks is not None:
            raise ValueError(f"cannot schedule after {delay} s: negative, or already scheduled")
        callbacks = self._one_callback
        callbacks[0] = callback
        self.callbacks = callbacks
        heappush(self._heap, (self.env._now + delay, NORMAL, next(self._eid), self))


def _trigger_nothing(_: object) -> None:
    """What a ``Rearmed`` event's reused callback list holds before its first arming."""


#: What a station calls when a request leaves it, with the time the request spent there
#: (overhead, queue and service; seconds).
Done = Callable[[float], object]


def _trigger(event: simpy.Event, _: object) -> None:
    if not event.triggered:
        event.succeed()


class Route:
    """One RPC of a station with what a request of it needs, looked up once (a request
    reads these for every call): its samplers, whether it goes through the batcher, its
    record."""

    __slots__ = ("batched", "loop_half_s", "name", "overhead", "sampler", "station", "stats")

    def __init__(self, station: Station, name: str) -> None:
        self.station = station
        self.name = name
        self.sampler = station.samplers[name]
        overhead = station._overhead[name]
        #: ``None`` when calls of this RPC have no overhead.
        self.overhead: OverheadSampler | None = overhead if overhead.active else None
        batching = station.calibration.batching
        self.batched = batching is not None and (not batching.rpcs or name in batching.rpcs)
        #: Half a call's event-loop time (s) when the station's loops are servers of their
        #: own (``Batching.loop == "queue"``; batched RPCs only), else 0.
        self.loop_half_s = station._loop_half_s if self.batched else 0.0
        self.stats = station.stats[name]


class Station:
    """One service: ``workers`` servers in front of which requests queue (FCFS), optionally
    through a batcher. Records busy time per window for utilisation.

    Requests and batch workers are event callbacks, not SimPy processes (``Request``):
    model mode sends millions of calls a day, and a process per call costs two bookkeeping
    events (start and end) and a generator resume per wait on top of the waits themselves.
    The events a request waits on are the same as a process's would be. ``submit`` sends a
    request with a callback; ``serve`` wraps it for callers that are processes."""

    def __init__(
        self,
        env: simpy.Environment,
        name: str,
        calibration: ServiceCalibration,
        rng: np.random.Generator,
        window_s: float = 900.0,
    ) -> None:
        self.env = env
        self.name = name
        self.calibration = calibration
        self.workers = calibration.workers
        exponent = calibration.batching.cv_exponent if calibration.batching else 0.5
        self.samplers = {
            rpc: ServiceTimeSampler(c, rng, exponent) for rpc, c in calibration.rpcs.items()
        }
        self._overhead = {rpc: OverheadSampler(c, rng) for rpc, c in calibration.rpcs.items()}
        self.stats: dict[str, RpcStats] = {rpc: RpcStats() for rpc in calibration.rpcs}
        self.window_s = window_s
        self.busy_s: defaultdict[int, float] = defaultdict(float)
        self.wait_total_s: defaultdict[int, float] = defaultdict(float)
        self.batches = 0
        self.batched_requests = 0
        # A plain FCFS multi-server (free count + requests waiting for a server) instead of
        # simpy.Resource: the same discipline without request/release events.
        self._free = calibration.workers
        self._waiting: deque[Request] = deque()
        self._batching = calibration.batching
        self._queue: deque[Request] = deque()
        #: Batch workers waiting for a request.
        self._idle: list[_BatchWorker] = []
        #: While a worker waits for its batch to grow (``Batching.grow_to_previous``): the
        #: event to trigger once ``_wanted`` requests are queued.
        self._gathered: simpy.Event | None = None
        self._wanted = 0
        #: Calls that have reached the service (for the event-loop share, ``loop_ms``).
        self._arrivals = 0
        #: ``Batching.loop == "queue"``: half a call's event-loop time (s), and when each
        #: worker's loop is next free (it serves the calls first come, first served).
        self._loop_half_s = 0.0
        self._loop_free: list[float] = []
        #: ... and while each worker's batch runs (until when), the loop's passes take
        #: ``_loop_contended_s`` (``Batching.loop_contention``).
        self._batch_until: list[float] = []
        self._loop_contended_s = 0.0
        batching = calibration.batching
        if batching is not None and batching.loop == "queue" and batching.loop_ms > 0:
            self._loop_half_s = batching.loop_ms / 2000.0
            self._loop_free = [0.0] * calibration.workers
            self._batch_until = [0.0] * calibration.workers
            self._loop_contended_s = self._loop_half_s * (1.0 + batching.loop_contention)
        self.routes = {rpc: Route(self, rpc) for rpc in calibration.rpcs}
        if self._batching is not None:
            for loop in range(calibration.workers):
                _BatchWorker(self, self._batching, rng, loop).next_batch()

    def _loop_pass(self, now: float) -> float:
        """When the loop half of a call that reaches the event loops now ends: on the loop
        that is free first (the kernel spreads connections over the workers' sockets), after
        the calls already waiting for it."""
        free = self._loop_free
        index = free.index(min(free)) if len(free) > 1 else 0
        start = max(now, free[index])
        # A pass that starts while the worker's batch runs shares the cores with it.
        end = start + (
            self._loop_contended_s if start < self._batch_until[index] else self._loop_half_s
        )
        free[index] = end
        return end

    def _loop_backlog(self, loop: int) -> float:
        """How long worker ``loop``'s event loop is busy with the calls that reached it
        before now (0 when idle)."""
        return max(self._loop_free[loop] - self.env._now, 0.0)

    def _account(self, start: float, service: float, wait: float) -> None:
        window = int(start // self.window_s)
        self.busy_s[window] += service
        self.wait_total_s[window] += wait

    def submit(self, rpc: str, items: int, done: Done) -> None:
        """A request arrives now: it queues, is served, and ``done(time spent here)`` is
        called from the callback of the event it leaves with."""
        _CallbackRequest(self.env, done).send(self.routes[rpc], items)

    def serve(self, rpc: str, items: int = 1) -> Generator[simpy.Event, Any, float]:
        """Process body: queue, be served, return the time spent in the service (s)."""
        left = self.env.event()
        _CallbackRequest(self.env, left.succeed).send(self.routes[rpc], items)
        return float((yield left))

    def utilisation(self, window: int) -> float:
        return self.busy_s.get(window, 0.0) / (self.workers * self.window_s)

    def mean_service_s(self, rpc: str, items: float = 1.0) -> float:
        c = self.calibration.rpcs[rpc]
        return (c.mean_ms + c.per_item_ms * items) / 1000.0


class Request(Rearmed):
    """A request's way through a station (the callback form of a process body): overhead
    in, queue, service (alone, or in a batch), overhead out, then ``left(time spent)``.

    One object serves one request at a time and may be sent again after it has left: a
    caller that makes its calls one after another (a shopper's session) is a subclass and
    sends itself, so a call allocates no request. The request is also the one event every
    wait of the caller and of its requests reuses (``Rearmed``), and its callbacks are the
    class's functions, called by SimPy with the request itself."""

    __slots__ = ("_on_leave", "_on_served", "arrived", "items", "overhead", "queued", "route")

    def __init__(self, env: simpy.Environment) -> None:
        # ``Rearmed.__init__``, inline: a request (a session) is made per shopper, ~2 M a day.
        self.env = env
        self.callbacks = None  # type: ignore[assignment]
        self._value = None
        self._ok = True
        self._heap = env._queue
        self._eid = env._eid
        self._one_callback = [_trigger_nothing]
        self.arrived = 0.0
        self.queued = 0.0
        self.overhead = 0.0
        self.items = 1
        # The ends of the service and of the outbound overhead are the subclass's own (a
        # session inlines ``left`` in them): its functions, looked up once here instead of
        # a bound method made per call.
        cls = type(self)
        self._on_served: Callable[[Any], None] = cls._served
        self._on_leave: Callable[[Any], None] = cls._leave

    def left(self, in_service: float) -> None:
        """The request left the station, ``in_service`` seconds after it was sent."""
        raise NotImplementedError

    def send(self, route: Route, items: int) -> None:
        """The request reaches ``route``'s station now."""
        self.route = route
        self.items = items
        self.reach()

    def reach(self) -> None:
        """``send`` for a request whose ``route`` and ``items`` are set (a caller that sets
        them before the wait that ends in sending schedules this: a call less per request)."""
        self.arrived = now = self.env._now  # env.now is a property: a call per read
        route = self.route
        sampler = route.overhead
        if sampler is not None:
            # ``sampler.sample()`` inline while its buffer holds draws (a constant overhead
            # keeps it empty and comes from ``sample``).
            buffer = sampler._buffer
            self.overhead = overhead = buffer.pop() if buffer else sampler.sample()
            if route.loop_half_s:
                # The loop's share of the overhead is spent on the loop (``to_loop``, and
                # ``finish`` on the way out); the rest half before it, half after.
                self.overhead = overhead = max(overhead - 2 * route.loop_half_s, 0.0)
                self.after(overhead / 2, Request.to_loop)
                return
            if overhead > 0:
                # Client and gRPC time outside the queue: half on the way in, half on the
                # way out. ``self.after(overhead / 2, Request.enter)`` inline (every batched
                # call, ~2 M a day): the event has just fired or is new, and overhead > 0.
                callbacks = self._one_callback
                callbacks[0] = _ENTER
                self.callbacks = callbacks
                heappush(self._heap, (now + overhead / 2, NORMAL, next(self._eid), self))
                return
        else:
            self.overhead = 0.0
            if not route.batched:
                # ``enter`` and ``_start`` inline: most calls of a day (feedback, similar
                # items, orders, telemetry, stop reports) have no overhead and no batcher,
                # and two Python calls fewer per such event is a measurable share of it.
                station = route.station
                station._arrivals += 1
                self.queued = now
                if station._free > 0:
                    station._free -= 1
                    # ``route.sampler.sample(self.items)`` inline while its buffer holds
                    # draws (the same number: the next draw plus the per-item time).
                    service_time = route.sampler
                    buffer = service_time._buffer
                    if buffer:
                        service = buffer.pop() + service_time.per_item_s * self.items
                    else:
                        service = service_time.sample(self.items)
                    # Station._account: nothing was waited for (started == queued), and a
                    # zero wait would change no window's total.
                    station.busy_s[int(now // station.window_s)] += service
                    # ``self.after(service, self._on_served)`` inline: the request's event
                    # has just fired or is new (off the heap), and service is not negative.
                    callbacks = self._one_callback
                    callbacks[0] = self._on_served
                    self.callbacks = callbacks
                    heappush(self._heap, (now + service, NORMAL, next(self._eid), self))
                else:
                    station._waiting.append(self)
                return
            if route.loop_half_s:
                self.to_loop()
                return
        self.enter()

    def to_loop(self) -> None:
        """Reach the service's event loop (``Batching.loop == "queue"``): wait for it, spend
        the inbound half of the call's loop time, then ``enter``."""
        now = self.env._now
        self.after(self.route.station._loop_pass(now) - now, _ENTER)

    def enter(self) -> None:
        """Reach the service (after the inbound overhead): join the batcher's queue, take a
        free server, or wait in line for one."""
        route = self.route
        station = route.station
        station._arrivals += 1
        self.queued = self.env._now
        if route.batched:
            station._queue.append(self)
            if station._idle:
                worker = station._idle.pop()
                # What ``succeed()`` on an event the worker waits on did: scheduled now.
                # ``worker.after(0.0, _BatchWorker.wake)`` inline: an idle worker's event is
                # off the heap (it has fired; the worker is only idle between its events).
                callbacks = worker._one_callback
                callbacks[0] = _WAKE
                worker.callbacks = callbacks
                heappush(worker._heap, (worker.env._now, NORMAL, next(worker._eid), worker))
            gathered = station._gathered
            if (
                gathered is not None
                and not gathered.triggered
                and len(station._queue) >= station._wanted
            ):
                gathered.succeed()
        elif station._free > 0:
            station._free -= 1
            self._start()
        else:
            station._waiting.append(self)

    def _start(self) -> None:
        route = self.route
        station = route.station
        started = self.env._now
        service = route.sampler.sample(self.items)
        # Station._account, inline (once per request).
        window = int(started // station.window_s)
        station.busy_s[window] += service
        station.wait_total_s[window] += started - self.queued
        self.after(service, self._on_served)

    def _served(self) -> None:
        station = self.route.station
        if station._waiting:
            # Hand the server straight to the next in line (now, as ``succeed()`` would).
            station._waiting.popleft().after(0.0, Request._start)
        else:
            station._free += 1
        # ``finish``, inline (once per unbatched request).
        if self.overhead > 0:
            self.after(self.overhead / 2, self._on_leave)
        else:
            self.left(self.env._now - self.arrived)

    def finish(self) -> None:
        """Leave the service: the outbound overhead (the event loop's half first, when the
        loop is a server of its own), then ``left``."""
        overhead = self.overhead
        if self.route.loop_half_s:
            now = self.env._now
            self.after(self.route.station._loop_pass(now) - now + overhead / 2, self._on_leave)
            return
        if overhead > 0:
            # ``self.after(overhead / 2, self._on_leave)`` inline: the end of every batched
            # call (~2 M a day); the event has just fired.
            callbacks = self._one_callback
            callbacks[0] = self._on_leave
            self.callbacks = callbacks
            heappush(self._heap, (self.env._now + overhead / 2, NORMAL, next(self._eid), self))
        else:
            self.left(self.env._now - self.arrived)

    def _leave(self) -> None:
        self.left(self.env._now - self.arrived)


#: ``Request``'s callbacks as module constants (read once per batched call).
_ENTER = Request.enter
_FINISH = Request.finish


class _CallbackRequest(Request):
    """A request that calls ``done(time spent)`` when it leaves (``Station.submit``)."""

    __slots__ = ("done",)

    def __init__(self, env: simpy.Environment, done: Done) -> None:
        super().__init__(env)
        self.done = done

    def left(self, in_service: float) -> None:
        self.done(in_service)


class _BatchWorker(Rearmed):
    """One worker of a batching station (the callback form of a loop): when idle it waits to
    be woken; then it takes up to ``max_batch`` queued requests (after up to ``max_wait``
    for more), serves them as one batch, lengthened by the event loop's share of the calls
    that arrive meanwhile, and completes each request with an event of its own. With
    ``grow_to_previous`` it waits (one worker at a time) for the queue to hold as many
    requests as its last batch, or for the oldest to have waited ``max_wait``. The worker is
    the event it waits on (``Rearmed``)."""

    __slots__ = (
        "batch",
        "grow",
        "loop",
        "loop_s",
        "max_batch",
        "max_wait_s",
        "previous",
        "resumed",
        "rng",
        "seen",
        "service",
        "started",
        "station",
        "stolen",
        "variability",
        "wake_s",
        "wakes",
        "woken",
    )

    #: Exponential wake-ups drawn per numpy call.
    WAKE_BLOCK = 1024

    def __init__(
        self, station: Station, batching: Batching, rng: np.random.Generator, loop: int = 0
    ) -> None:
        super().__init__(station.env)
        self.station = station
        #: The worker process's event loop (``Station._loop_free``) in queue mode.
        self.loop = loop
        #: Back from a wait (for a request, or for the batch to grow): in queue mode the
        #: batch starts after the calls already waiting for the event loop.
        self.resumed = False
        self.max_batch = batching.max_batch
        self.max_wait_s = batching.max_wait_ms / 1000.0
        self.variability = batching.variability
        self.wake_s = batching.wake_ms / 1000.0
        self.rng = rng
        #: Drawn exponential wake-ups (s), used from the end; ``None``: the constant one.
        self.wakes: list[float] | None = [] if batching.wake == "exponential" else None
        # Queue mode spends the loop's time outside the batch (``Request.to_loop``).
        self.loop_s = batching.loop_ms / 1000.0 if batching.loop == "extends" else 0.0
        self.grow = batching.grow_to_previous
        #: Size of the last batch (what ``grow`` waits for).
        self.previous = 1
        self.woken = False
        self.batch: list[Request] = []
        self.service = 0.0
        self.started = 0.0
        self.seen = 0
        #: Extensions of the running batch so far.
        self.stolen = 0

    def next_batch(self) -> None:
        station = self.station
        env = station.env
        queue = station._queue
        if not queue:
            # Woken by the next request (``Request.enter``).
            station._idle.append(self)
        elif self.grow:
            wanted = min(self.previous, self.max_batch)
            if len(queue) >= wanted:
                # Enough queued (below the knee: one request after a lone batch), no wait.
                self._start()
                return
            deadline = queue[0].queued + self.max_wait_s - env._now  # no property call
            # One worker gathers at a time (the service has one batcher per process), until
            # the queue holds ``wanted`` (``Request.enter`` triggers it) or the oldest
            # request has waited ``max_wait``.
            if deadline > 0 and station._gathered is None:
                gathered = station._gathered = env.event()
                station._wanted = wanted
                CallbackTimeout(env, deadline, partial(_trigger, gathered))
                gathered.callbacks.append(self._grown)
                return
            self._start()
        elif len(queue) < self.max_batch and self.max_wait_s > 0:
            self.after(self.max_wait_s, _BatchWorker._waited)
        else:
            self._start()

    def wake(self) -> None:
        """A request arrived at the idle worker."""
        self.woken = True
        # ``next_batch``'s usual answer inline (a call fewer per wake-up, ~2 M a day): the
        # request that woke the worker starts a batch at once when the batcher would not
        # wait (as many queued as the last batch held, or no wait configured).
        queue = self.station._queue
        if queue and (
            len(queue) >= min(self.previous, self.max_batch)
            if self.grow
            else len(queue) >= self.max_batch or self.max_wait_s <= 0
        ):
            self._start()
        else:
            self.next_batch()

    def _draw_wake(self) -> float:
        wakes = self.wakes
        assert wakes is not None
        if not wakes:
            wakes.extend(self.rng.exponential(self.wake_s, self.WAKE_BLOCK).tolist())
        return wakes.pop()

    def _grown(self, _: object) -> None:
        self.station._gathered = None
        # Another worker may have taken the queue meanwhile.
        self._waited()

    def _waited(self) -> None:
        self.resumed = True
        if self.station._queue:
            self._start()
        else:
            self.next_batch()

    def _start(self) -> None:
        station = self.station
        queue = station._queue
        size = min(self.max_batch, len(queue))
        # Below the knee most batches are of one request.
        batch = [queue.popleft()] if size == 1 else [queue.popleft() for _ in range(size)]
        # One model call for the batch: the fixed part once, the per-item part per request.
        sampler = batch[0].route.sampler
        items = batch[0].items if len(batch) == 1 else sum(r.items for r in batch)
        variability = self.variability
        if variability == "averaged":
            # ``sampler.averaged_sample(items)`` inline (the same expression) while the batch
            # size's shape is known and normals are buffered: once per batch.
            shape = sampler._averaged.get(items)
            normals = sampler._normals
            if shape is not None and normals and (sigma := shape[1]) is not None:
                service = shape[0] * math.exp(sigma * normals.pop() - sigma * sigma / 2)
            else:
                service = sampler.averaged_sample(items)
        elif variability == "proportional":
            service = sampler.unit_sample() * sampler.batch_mean_s(items)
        elif sampler.calibration.batch_ms:
            service = sampler.batch_mean_s(items)
        else:
            service = sampler.sample(0) + sampler.per_item_s * items
        if self.woken:
            service += self.wake_s if self.wakes is None else self._draw_wake()
            self.woken = False
            self.resumed = True
        if self.resumed:
            self.resumed = False
            if station._loop_half_s:
                # The batcher is a coroutine on the event loop: woken, it runs after the calls
                # already waiting for the loop. (Right after a batch it goes on without a
                # wait: the measured batch times hold that resumption.)
                service += station._loop_backlog(self.loop)
        self.batch = batch
        self.previous = len(batch)
        self.service = service
        self.started = station.env._now
        if station._batch_until:
            # Queue mode: the batch runs for exactly ``service`` (no extensions).
            station._batch_until[self.loop] = self.started + service
        self.seen = station._arrivals
        self.stolen = 0
        station.batches += 1
        station.batched_requests += len(batch)
        # ``self.after(service, _BatchWorker._extend)`` inline (once per batch): the worker's
        # event has just fired, and a service time is not negative.
        callbacks = self._one_callback
        callbacks[0] = _EXTEND
        self.callbacks = callbacks
        heappush(self._heap, (self.started + service, NORMAL, next(self._eid), self))

    def _extend(self) -> None:
        # The event loop's share: calls arriving during the batch (and during each
        # extension) lengthen it; with several workers (processes) each loop gets its
        # share of the calls. Capped: past workers / loop_ms calls per second the loops
        # alone saturate and the extensions would never end.
        station = self.station
        if self.stolen < MAX_LOOP_EXTENSIONS:
            stolen = (station._arrivals - self.seen) * self.loop_s / station.workers
            if stolen > 0.0:
                self.stolen += 1
                self.seen = station._arrivals
                self.service += stolen
                # ``self.after(stolen, _BatchWorker._extend)`` inline: the event has just
                # fired, and stolen > 0.
                callbacks = self._one_callback
                callbacks[0] = _EXTEND
                self.callbacks = callbacks
                heappush(self._heap, (station.env._now + stolen, NORMAL, next(self._eid), self))
                return
        batch, started = self.batch, self.started
        if len(batch) == 1:
            wait = started - batch[0].queued
        else:
            wait = sum(started - r.queued for r in batch)
        # ``station._account(started, self.service, wait)``, inline (once per batch).
        window = int(started // station.window_s)
        station.busy_s[window] += self.service
        station.wait_total_s[window] += wait
        # Each request learns of the batch's end through an event of its own, scheduled now:
        # ``request.after(0.0, Request.finish)`` inline (~2 M a day). A request in a batch
        # waits for nothing else, so its event is off the heap.
        now = station.env._now
        heap = self._heap
        eid = self._eid
        for request in batch:
            callbacks = request._one_callback
            callbacks[0] = _FINISH
            request.callbacks = callbacks
            heappush(heap, (now, NORMAL, next(eid), request))
        self.batch = []
        self.next_batch()


#: ``_BatchWorker``'s callbacks as module constants (read once per batch).
_WAKE = _BatchWorker.wake
_EXTEND = _BatchWorker._extend


def build_stations(
    env: simpy.Environment,
    calibration: Calibration,
    rng: np.random.Generator,
    window_s: float,
) -> dict[str, Station]:
    """One station per calibrated service."""
    return {
        name: Station(env, name, svc, rng, window_s) for name, svc in calibration.services.items()
    }
