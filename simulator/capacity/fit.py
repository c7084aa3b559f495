"""Fitting the queue model to measurements, and running the model under the same load.

A take-everything-queued batcher serving ``c`` closed-loop callers settles into cycles in which
each batch holds about ``c`` requests, so the mean latency at concurrency ``c`` is
``overhead + a + b·c``: ``a`` the fixed cost of a batch (one model call, one thread hop), ``b``
the cost per request (its share of the model call plus everything serialised per request: the
server's event loop, the interceptors, protobuf, and on a 2-core machine the load generator's
CPU). A straight line through the ladder of mean latencies gives ``a`` and ``b``; the bare echo
RPC measured in the same run gives ``overhead``.

The model side (``simulate_open``, ``simulate_closed``) feeds the same ``Station`` that model
mode uses with the same arrival process as the generator (``measure.poisson_arrivals``, same
seed), the same in-flight cap, and summarises it the same way.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np
import simpy

from simulator.capacity.measure import (
    BatchCounts,
    DurationCounts,
    LoadResult,
    pass_median_p95,
    poisson_arrivals,
)
from simulator.platform import RpcCalibration, ServiceCalibration, Station


@dataclass(frozen=True)
class LineFit:
    """``y = intercept + slope·x`` with its coefficient of determination."""

    intercept: float
    slope: float
    r2: float


def fit_line(
    x: Sequence[float], y: Sequence[float], weights: Sequence[float] | None = None
) -> LineFit:
    """Weighted least-squares line (weights default to 1); ``ValueError`` on fewer than two
    distinct ``x``."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    w = np.ones_like(xs) if weights is None else np.asarray(weights, dtype=float)
    if xs.size != ys.size or xs.size != w.size:
        raise ValueError("x, y and weights must have the same length")
    if np.unique(xs).size < 2:
        raise ValueError("need at least two distinct x values to fit a line")
    sw = w.sum()
    mx = (w * xs).sum() / sw
    my = (w * ys).sum() / sw
    sxx = (w * (xs - mx) ** 2).sum()
    slope = float((w * (xs - mx) * (ys - my)).sum() / sxx)
    intercept = float(my - slope * mx)
    residual = (w * (ys - intercept - slope * xs) ** 2).sum()
    total = (w * (ys - my) ** 2).sum()
    r2 = float(1.0 - residual / total) if total > 0 else 1.0
    return LineFit(intercept, slope, r2)


@dataclass(frozen=True)
class BatchFit:
    """Batch time ``per_batch_ms + per_item_ms·n`` and the overhead outside the queue."""

    per_batch_ms: float
    per_item_ms: float
    overhead_ms: float
    r2: float


def fit_batching(
    concurrencies: Sequence[float], mean_latency_ms: Sequence[float], overhead_ms: float
) -> BatchFit:
    """``a`` and ``b`` of a take-all batcher from closed-loop mean latencies per concurrency.

    The line is fitted to latency against concurrency, weighted by 1/concurrency (the noise of
    a mean grows with the latency itself, and the light-load points pin the fixed part). ``a``
    is the intercept less ``overhead_ms``, floored at zero (a negative fixed cost is noise; the
    overhead then absorbs it); ``b`` is floored at a tiny positive value so the model always
    has a finite capacity.
    """
    line = fit_line(concurrencies, mean_latency_ms, [1.0 / c for c in concurrencies])
    per_item = max(line.slope, 1e-3)
    per_batch = line.intercept - overhead_ms
    overhead = overhead_ms
    if per_batch < 0:
        overhead = max(overhead_ms + per_batch, 0.0)
        per_batch = 0.0
    return BatchFit(per_batch, per_item, overhead, line.r2)


def exponential_wake_ms(
    without_ms: Sequence[float] | np.ndarray, with_ms: Sequence[float], seed: int = 0
) -> float:
    """The mean (ms) of an exponential wake-up ``W`` such that ``X + W`` has the median of
    ``with_ms``, ``X`` distributed as ``without_ms`` (0 when the medians do not differ).

    A difference of medians is the mean of a constant shift, not of an exponential one:
    with a narrow ``X`` (intent's lone call) it reads an exponential's mean 10-15 % low."""
    rng = np.random.default_rng(seed)
    base = np.asarray(without_ms, dtype=float)
    target = float(np.median(np.asarray(with_ms, dtype=float)))
    if base.size == 0 or target <= float(np.median(base)):
        return 0.0
    units = rng.standard_exponential(base.size)
    # The median of X + m·E rises with m: bisect. At m = target - min(X) every sum is at
    # least the target, so the median is too.
    low, high = 0.0, target - float(base.min())
    for _ in range(50):
        mid = (low + high) / 2
        if float(np.median(base + mid * units)) < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


@dataclass(frozen=True)
class SpreadPoint:
    """One size class's batches: how many, their mean (ms) and the cv of their durations."""

    label: str
    batches: float
    mean_ms: float
    cv: float


#: Fewest batches of a size class whose spread ``batch_spread`` reads.
MIN_SPREAD_BATCHES = 30
#: The share of a size class's batches between which ``batch_spread`` reads its spread: the
#: upper body, around the lone call's p50..p95 (``calibrate.lognormal_cv``).
SPREAD_RANGE = (0.3, 0.98)


def batch_spread(counts: DurationCounts, label: str = "") -> SpreadPoint | None:
    """The mean and cv of one size class's batch durations from its bucket counts, or
    ``None`` with fewer than ``MIN_SPREAD_BATCHES`` or fewer than two bucket bounds within
    ``SPREAD_RANGE``.

    The cv is read the way the lone call's is (``calibrate.lognormal_cv``), from the spread of
    the upper body, so that the two are comparable and neither the floor of a short batch nor
    a few long stalls sway it. The durations are taken as lognormal there: at each bucket
    bound ``b`` whose cumulative share ``F`` lies in ``SPREAD_RANGE``, ``probit(F) =
    (ln b - mu) / sigma``, and ``1 / sigma`` is the slope of a least-squares line through
    those points. That uses the bounds as they are, with no guess at where in its bucket a
    quantile lies (which reads a narrow spread 15 % wide with buckets 25 % apart)."""
    if counts.count < MIN_SPREAD_BATCHES or counts.sum_s <= 0:
        return None
    low, high = SPREAD_RANGE
    points = [
        (math.log(bound), NormalDist().inv_cdf(share))
        for bound, cumulative in zip(counts.bounds, counts.cumulative, strict=True)
        if low <= (share := cumulative / counts.count) <= high
    ]
    if len(points) < 2:
        return None
    logs, probits = zip(*points, strict=True)
    slope = float(np.polyfit(logs, probits, 1)[0])
    if slope <= 0:
        return None
    sigma = 1.0 / slope
    cv = math.sqrt(math.expm1(sigma * sigma))
    return SpreadPoint(label, counts.count, counts.sum_s * 1000.0 / counts.count, cv)


@dataclass(frozen=True)
class BatchSpread:
    """How batches' cv falls with their length, ``cv(k) = lone_cv * k ** -exponent`` with
    ``k`` a class's mean over the lone batch's, and the classes it was read from."""

    exponent: float
    lone_cv: float
    points: list[SpreadPoint]


def within_pass_cv(point: SpreadPoint, passes: Sequence[DurationCounts]) -> SpreadPoint:
    """``point`` (one size class's batches, pooled over passes) with the spread between the
    passes taken out: the cv of a batch's time within one pass.

    A shared VM runs each pass at a speed of its own (intent's lone batch's mean varied
    12-17 % from pass to pass in runs 54-57), so the pooled durations spread by that as well
    as by each batch's own noise. Validate judges the median over the passes of each pass's
    p95, which leaves the passes' speeds out; a model that draws every batch with the pooled
    spread puts them back into every pass (intent's pooled cv read 0.23-0.27 where the
    passes' own read 0.17-0.19; re-predicted with theirs, its p95 in runs 54-57 came out 1-8
    points lower, where it had been 9-24 % high: docs/capacity-runs.md, run 57).

    On the log scale the pooled variance is the sum of the two, ``sigma^2 = s_w^2 + tau^2``.
    ``tau^2``, the variance of the passes' log speeds, comes from the spread of the passes'
    mean times by the one-way random-effects (ANOVA) estimator: ``S = sum n_k (x_k - x)^2``
    over the passes' log means ``x_k`` (``n_k`` batches each, ``N`` in all) has expectation
    ``(K - 1) v + (N - sum n_k^2 / N) tau^2``, ``v / n_k`` the variance of a mean of ``n_k``
    batches' times on the log scale, ``v`` taken as the pooled cv squared (so ``tau^2`` errs
    low, and the cv high). Passes with no batches of the class are left out; with fewer than
    two passes the point is returned as it is."""
    used = [c for c in passes if c.count > 0 and c.sum_s > 0]
    if len(used) < 2 or point.cv <= 0:
        return point
    total = sum(c.count for c in used)
    counts = np.asarray([c.count for c in used], dtype=float)
    logs = np.log([c.sum_s / c.count for c in used])
    centre = float((counts * logs).sum() / total)
    between = float((counts * (logs - centre) ** 2).sum())
    pooled = math.log1p(point.cv * point.cv)
    # Positive with two or more passes: N^2 - sum n_k^2 = 2 sum_{j<k} n_j n_k.
    effective = total - float((counts * counts).sum()) / total
    noise = (len(used) - 1) * point.cv * point.cv
    tau2 = min(max((between - noise) / effective, 0.0), pooled)
    return replace(point, cv=math.sqrt(math.expm1(pooled - tau2)))


def batch_cv_exponent(
    by_size: Mapping[str, DurationCounts],
    passes: Sequence[Mapping[str, DurationCounts]] = (),
) -> BatchSpread | None:
    """The line through ``(log k, log cv)`` of the size classes (``batch_spread``), by least
    squares weighted by their batch counts: its slope (within 0..-1) and its value at ``k =
    1``. ``None`` without lone batches, or with fewer than three classes spanning at least a
    factor of 2 in length. With ``passes`` (each pass's own classes, which pool to
    ``by_size``) every class's cv is the one within a pass (``within_pass_cv``)."""
    spreads = (
        batch_spread(counts, label) if not passes else _within(label, counts, passes)
        for label, counts in by_size.items()
    )
    points = [p for p in spreads if p is not None and p.cv > 0]
    lone = next((p for p in points if p.label == "1"), None)
    if lone is None:
        return None
    used = sorted((p for p in points if p.mean_ms >= lone.mean_ms), key=lambda p: p.mean_ms)
    lengths = np.log([p.mean_ms / lone.mean_ms for p in used])
    if len(used) < 3 or float(lengths.max()) < math.log(2.0):
        return None
    weights = np.sqrt([p.batches for p in used])
    slope, intercept = np.polyfit(lengths, np.log([p.cv for p in used]), 1, w=weights)
    return BatchSpread(min(max(-float(slope), 0.0), 1.0), math.exp(float(intercept)), used)


def _within(
    label: str, counts: DurationCounts, passes: Sequence[Mapping[str, DurationCounts]]
) -> SpreadPoint | None:
    point = batch_spread(counts, label)
    if point is None:
        return None
    return within_pass_cv(point, [p[label] for p in passes if label in p])


def batch_level_se(pooled: RpcCalibration, passes: Sequence[RpcCalibration]) -> float | None:
    """How well the pooled calibration knows its batch times: the relative standard error of
    the batch table's level, from the calibration's passes each fitted alone.

    Each pass's level is the geometric mean over the pooled table's sizes of its own
    ``T(n)`` against the pooled ``T(n)``; the standard error is the spread of those logs
    over ``sqrt(passes)``. Near the knee a few per cent of batch time are a large share of
    the queue (intent's p95 error at 0.7 of its knee moved by -18 / +24 points for -3 / +3 %
    of batch time in run 57, while the passes' levels spread by 12-16 % in runs 54-58), so
    this is the calibration's part of the prediction's uncertainty. None with fewer than
    three passes with a table, or without a pooled one."""
    sizes = [n for n, _ in pooled.batch_ms]
    base = np.asarray([pooled.batch_mean_ms(n) for n in sizes])
    if not sizes or not np.all(base > 0):
        return None
    levels = [
        float(np.mean(np.log([c.batch_mean_ms(n) for n in sizes] / base)))
        for c in passes
        if c.batch_ms
    ]
    if len(levels) < 3:
        return None
    return float(np.std(levels, ddof=1) / math.sqrt(len(levels)))


def capacity_per_s(service: ServiceCalibration, rpc: str) -> float:
    """Analytic maximum throughput (requests/s) of ``rpc`` alone on ``service``."""
    r = service.rpcs[rpc]
    if service.batching is None:
        return service.workers * 1000.0 / max(r.mean_ms + r.per_item_ms, 1e-9)
    # The best batch size up to max_batch (a measured table may bend either way).
    best = max(n / max(r.batch_mean_ms(n), 1e-9) for n in range(1, service.batching.max_batch + 1))
    per_worker = best * 1000.0
    loop_ms = service.batching.loop_ms
    if service.batching.loop == "queue":
        # The event loop is a server of its own: the slower of the two sets the pace.
        # ``loop_contention`` is left out: how many passes meet a running batch depends on
        # the dynamics (about a third at saturation in the model of run 48's calibration,
        # whose batcher gathers calls between batches), which a simulated knee has.
        return service.workers * min(per_worker, 1000.0 / loop_ms if loop_ms > 0 else math.inf)
    # Each call's event-loop time lengthens the batches (Batching.loop_ms): at throughput x
    # the batcher runs at 1 - x·loop of its speed, so x = c0 (1 - x·loop) per worker.
    per_worker /= 1.0 + per_worker * loop_ms / 1000.0
    return service.workers * per_worker


def _station(service: ServiceCalibration, seed: int) -> tuple[simpy.Environment, Station]:
    env = simpy.Environment()
    station = Station(env, "model", service, np.random.default_rng(seed), window_s=math.inf)
    return env, station


def _batch_counts(station: Station) -> BatchCounts | None:
    """The station's batches over the whole run, as the service's own series count them."""
    if station.calibration.batching is None:
        return None
    return BatchCounts(
        float(station.batches), float(station.batched_requests), sum(station.busy_s.values())
    )


def simulate_open(
    service: ServiceCalibration,
    rpc: str,
    *,
    rate: float,
    duration_s: float,
    warmup_s: float,
    seed: int,
    max_in_flight: int,
    timeout_s: float = 10.0,
) -> LoadResult:
    """The model under the generator's open-loop job: same arrivals, cap, window and counts."""
    env, station = _station(service, seed)
    arrivals = poisson_arrivals(rate, warmup_s + duration_s, seed).tolist()
    stop_at = warmup_s + duration_s
    latencies: list[float] = []
    state = {"in_flight": 0, "offered": 0, "drops": 0, "in_window": 0, "errors": 0}

    def call(scheduled: float) -> Generator[simpy.Event, Any, None]:
        yield from station.serve(rpc)
        state["in_flight"] -= 1
        done = env.now
        if done - scheduled > timeout_s:
            # The generator's deadline would have failed this call.
            state["errors"] += scheduled >= warmup_s
            return
        if warmup_s <= done <= stop_at:
            state["in_window"] += 1
        if scheduled >= warmup_s:
            latencies.append((done - scheduled) * 1000.0)

    def source() -> Generator[simpy.Event, Any, None]:
        for at in arrivals:
            yield env.timeout(at - env.now)
            measured = at >= warmup_s
            state["offered"] += measured
            if state["in_flight"] >= max_in_flight:
                state["drops"] += measured
                continue
            state["in_flight"] += 1
            env.process(call(at))

    env.process(source())
    env.run(until=stop_at + 4 * timeout_s)
    return LoadResult(
        kind="model-open",
        level=rate,
        offered=state["offered"],
        completed=len(latencies),
        errors=state["errors"],
        drops=state["drops"],
        window_s=duration_s,
        throughput=state["in_window"] / duration_s,
        latencies_ms=latencies,
        batches=_batch_counts(station),
    )


def simulate_closed(
    service: ServiceCalibration,
    rpc: str,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    seed: int,
) -> LoadResult:
    """The model under ``concurrency`` closed-loop callers (checks a fit against its ladder)."""
    env, station = _station(service, seed)
    stop_at = warmup_s + duration_s
    latencies: list[float] = []

    def caller() -> Generator[simpy.Event, Any, None]:
        while env.now < stop_at:
            sent = env.now
            yield from station.serve(rpc)
            if sent >= warmup_s and env.now <= stop_at:
                latencies.append((env.now - sent) * 1000.0)

    for _ in range(concurrency):
        env.process(caller())
    env.run(until=stop_at)
    return LoadResult(
        kind="model-closed",
        level=concurrency,
        offered=len(latencies),
        completed=len(latencies),
        errors=0,
        drops=0,
        window_s=duration_s,
        throughput=len(latencies) / duration_s,
        latencies_ms=latencies,
        batches=_batch_counts(station),
    )


#: Candidates of ``Batching.loop_contention`` that ``fit_loop_contention`` tries.
CONTENTION_GRID = tuple(round(0.25 * i, 2) for i in range(13))


@dataclass(frozen=True)
class OpenRun:
    """An open-loop job as the generator ran it, once per pass (each pass's rate and seed,
    the window they share) and each pass's measured p95."""

    rates: tuple[float, ...]
    seeds: tuple[int, ...]
    duration_s: float
    warmup_s: float
    pass_p95_ms: tuple[float, ...]
    max_in_flight: int = 256

    @property
    def p95_ms(self) -> float:
        """The judged p95: the median over the passes of each pass's p95, as validate judges
        its rates (a pooled p95 follows the one pass a burst of background load disturbed).
        A pass that completed no call (its p95 NaN) does not count."""
        finite = [p for p in self.pass_p95_ms if math.isfinite(p)]
        return float(np.median(finite)) if finite else math.nan


@dataclass(frozen=True)
class ContentionFit:
    """The chosen ``loop_contention`` and the model's judged p95 per run with it; per
    candidate, the same p95s and the squared error on the log scale summed over the runs."""

    contention: float
    p95_ms: tuple[float, ...]
    candidates: tuple[tuple[float, tuple[float, ...], float], ...]


def model_open_p95(
    service: ServiceCalibration, rpc: str, run: OpenRun, replications: int = 1
) -> float:
    """The model's judged p95 of ``run``: each pass simulated with its own rate and seed
    (the arrivals the generator sent) and the same short window from an empty queue, the
    median over the passes of each pass's p95, and its mean over ``replications`` sets of
    arrivals (seeds moved by 1000 each; a short job's p95 moves by 10 % from one set of
    arrivals to the next, and a fit needs the model's expectation). The same statistic as
    ``OpenRun.p95_ms`` on the measured side and validate's judged p95."""
    medians = []
    for replication in range(replications):
        passes = [
            simulate_open(
                service,
                rpc,
                rate=rate,
                duration_s=run.duration_s,
                warmup_s=run.warmup_s,
                seed=seed + 1000 * replication,
                max_in_flight=run.max_in_flight,
            )
            for rate, seed in zip(run.rates, run.seeds, strict=True)
        ]
        # A pass that completed no call has no p95 (as ``OpenRun.p95_ms`` on the measured side).
        passes = [result for result in passes if result.latencies_ms]
        if passes:
            medians.append(pass_median_p95(passes))
    return float(np.mean(medians)) if medians else math.nan


def fit_loop_contention(
    service: ServiceCalibration,
    rpc: str,
    runs: Sequence[OpenRun],
    grid: Sequence[float] = CONTENTION_GRID,
    replications: int = 6,
) -> ContentionFit:
    """The ``Batching.loop_contention`` (from ``grid``) whose model p95s are closest to the
    measured ones of ``runs`` (least squares of the log ratio of the judged p95s, see
    ``model_open_p95``), each run simulated in its own shape: a short job per pass from an
    empty queue, as calibrate measures them. The model with no contention already meets the
    batch times at their sizes; what it lacks under load is the loop waiting for a core
    behind the batch, which lengthens the tail."""
    if service.batching is None:
        raise ValueError("fit_loop_contention needs a batching service")
    candidates = []
    for contention in grid:
        candidate = replace(
            service, batching=replace(service.batching, loop_contention=float(contention))
        )
        p95s = tuple(model_open_p95(candidate, rpc, run, replications) for run in runs)
        error = sum(
            math.log(p / run.p95_ms) ** 2
            for p, run in zip(p95s, runs, strict=True)
            if p > 0 and run.p95_ms > 0
        )
        candidates.append((float(contention), p95s, error))
    best = min(candidates, key=lambda c: (c[2], c[0]))
    return ContentionFit(best[0], best[1], tuple(candidates))
