"""The load generator of calibrate and validate: closed-loop ladders and open-loop Poisson
arrivals against a real service over gRPC, in a separate process.

The generator process is started (``spawn``) before the parent opens any gRPC channel, so the
child has a clean gRPC runtime; it runs one ``grpc.aio`` event loop over one channel and serves
jobs sent through a pipe. Open-loop latency is measured from the *scheduled* arrival time, so a
generator that falls behind does not hide queueing (no coordinated omission), and a cap on calls
in flight turns arrivals past it into counted drops instead of an ever-growing task list: past
the knee the generator keeps its schedule and reports what the service could not take.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import math
import multiprocessing
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Seed of the generator process's one stream of input draws (``Workload``).
INPUT_SEED = 0

#: Request kinds the generator knows: (service, rpc).
WORKLOADS = {
    ("echo", "Echo"),
    ("recommendation", "Recommend"),
    ("intent", "Classify"),
}


@dataclass(frozen=True)
class Workload:
    """What to call: ``service.rpc`` at ``target`` with an input drawn at random for each call
    from ``inputs`` (user ids for Recommend, texts for Classify, ignored for Echo).

    At random, not in a fixed order from each job's first call: inputs differ in cost (a
    lone Recommend for one of the default model's 788 users takes 1.4-36 ms, median 4.4),
    and when every job walked the same order from its start, a job's length chose the inputs
    it measured. The calibration's short open-loop runs measured the head of the order, the
    validation's longer runs costlier users further in: at 149 calls/s recommendation's
    batches ran 9 % longer in a 2-second run than in 0.75-second ones (docs/capacity-runs.md,
    "Runs 43-44")."""

    service: str
    rpc: str
    target: str
    inputs: tuple[str, ...] = ()
    k: int = 10
    #: The service's Prometheus endpoint (``http://host:port/metrics``), when known: each
    #: job then carries the service's own count of micro-batches (``BatchCounts``).
    metrics_url: str | None = None


@dataclass(frozen=True)
class ClosedJob:
    """``concurrency`` callers back to back for ``warmup_s + duration_s``; the calls that
    finish in the first ``warmup_s`` are not measured."""

    workload: Workload
    concurrency: int
    duration_s: float
    warmup_s: float = 1.0


@dataclass(frozen=True)
class OpenJob:
    """Poisson arrivals at ``rate`` per second (seeded), measured after ``warmup_s``; an arrival
    finding ``max_in_flight`` calls outstanding is dropped."""

    workload: Workload
    rate: float
    duration_s: float
    warmup_s: float = 1.0
    seed: int = 0
    max_in_flight: int = 256
    timeout_s: float = 10.0


@dataclass(frozen=True)
class DurationCounts:
    """Batches of one size class (``shoptwin_batch_duration_by_size_seconds``): how many,
    their total time, and the cumulative count at each bucket's upper bound (``bounds``,
    seconds, ascending, without +Inf)."""

    count: float = 0.0
    sum_s: float = 0.0
    bounds: tuple[float, ...] = ()
    cumulative: tuple[float, ...] = ()

    def _combine(self, other: DurationCounts, sign: float) -> DurationCounts:
        if not other.bounds:
            return self
        if not self.bounds:
            return DurationCounts(
                sign * other.count,
                sign * other.sum_s,
                other.bounds,
                tuple(sign * c for c in other.cumulative),
            )
        if self.bounds != other.bounds:
            raise ValueError("batch duration buckets differ")
        return DurationCounts(
            self.count + sign * other.count,
            self.sum_s + sign * other.sum_s,
            self.bounds,
            tuple(a + sign * b for a, b in zip(self.cumulative, other.cumulative, strict=True)),
        )

    def __add__(self, other: DurationCounts) -> DurationCounts:
        return self._combine(other, 1.0)

    def __sub__(self, other: DurationCounts) -> DurationCounts:
        return self._combine(other, -1.0)


@dataclass(frozen=True)
class BatchCounts:
    """Micro-batches a service ran over some interval: how many, the items in them, and the
    batcher's busy time (from the service's ``shoptwin_batch_*`` series, or the model's
    station), and by size class their durations' spread where the service reports it.
    Counted over a whole job, warm-up and the last calls' drain included."""

    batches: float = 0.0
    items: float = 0.0
    busy_s: float = 0.0
    by_size: Mapping[str, DurationCounts] = field(default_factory=dict)

    def _by_size(self, other: BatchCounts, sign: float) -> dict[str, DurationCounts]:
        merged = dict(self.by_size)
        for label, counts in other.by_size.items():
            merged[label] = merged.get(label, DurationCounts())._combine(counts, sign)
        return merged

    def __add__(self, other: BatchCounts) -> BatchCounts:
        return BatchCounts(
            self.batches + other.batches,
            self.items + other.items,
            self.busy_s + other.busy_s,
            self._by_size(other, 1.0),
        )

    def __sub__(self, other: BatchCounts) -> BatchCounts:
        return BatchCounts(
            self.batches - other.batches,
            self.items - other.items,
            self.busy_s - other.busy_s,
            self._by_size(other, -1.0),
        )


def scrape_batches(url: str, service: str, timeout_s: float = 5.0) -> BatchCounts:
    """The service's batch counters from its Prometheus endpoint (zero before its first
    batch); ``OSError`` when the endpoint does not answer."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode("utf-8")
    values: dict[str, float] = {}
    # size class -> count, sum and {bucket bound: cumulative count}
    classes: dict[str, tuple[dict[str, float], dict[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("service") != service:
                continue
            if sample.name.startswith(BY_SIZE) and "size" in sample.labels:
                totals, buckets = classes.setdefault(sample.labels["size"], ({}, {}))
                if sample.name == f"{BY_SIZE}_bucket":
                    bound = float(sample.labels["le"])
                    if math.isfinite(bound):
                        buckets[bound] = sample.value
                else:
                    totals[sample.name[len(BY_SIZE) + 1 :]] = sample.value
            else:
                values[sample.name] = sample.value
    by_size = {
        label: DurationCounts(
            totals.get("count", 0.0),
            totals.get("sum", 0.0),
            tuple(sorted(buckets)),
            tuple(buckets[b] for b in sorted(buckets)),
        )
        for label, (totals, buckets) in classes.items()
    }
    return BatchCounts(
        values.get("shoptwin_batch_size_count", 0.0),
        values.get("shoptwin_batch_size_sum", 0.0),
        values.get("shoptwin_batch_duration_seconds_sum", 0.0),
        by_size,
    )


#: The service's batch durations by size class (``services.runtime.metrics``).
BY_SIZE = "shoptwin_batch_duration_by_size_seconds"


def _counts_or_none(url: str | None, service: str) -> BatchCounts | None:
    """The batch counters, or ``None`` when there is no endpoint or it does not answer (the
    load measurement goes on without the batch columns)."""
    if not url:
        return None
    try:
        return scrape_batches(url, service)
    except (OSError, ValueError):
        return None


@dataclass
class LoadResult:
    """One measured load level. Latencies (ms) of the calls that arrived in the measured window;
    ``throughput`` counts successful completions inside the window per second."""

    kind: str
    level: float
    offered: int
    completed: int
    errors: int
    drops: int
    window_s: float
    throughput: float
    latencies_ms: list[float] = field(default_factory=list)
    #: Open loop: how late each measured call left the generator after its scheduled arrival.
    send_lag_ms: list[float] = field(default_factory=list)
    #: The service's micro-batches during the job; ``None`` when not known.
    batches: BatchCounts | None = None

    def summary(self) -> dict[str, Any]:
        """Counts, throughput and percentiles (without the raw latencies); with batch counts,
        the mean batch size and the batcher's mean time per batch."""
        values = np.asarray(self.latencies_ms or [float("nan")])
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        data = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("latencies_ms", "send_lag_ms", "batches")
        }
        if self.batches is not None and self.batches.batches > 0:
            data.update(
                batch_size=round(self.batches.items / self.batches.batches, 3),
                batch_ms=round(self.batches.busy_s * 1000.0 / self.batches.batches, 3),
            )
        if self.send_lag_ms:
            lag50, lag95 = np.percentile(self.send_lag_ms, [50, 95])
            data.update(
                send_lag_p50_ms=round(float(lag50), 3), send_lag_p95_ms=round(float(lag95), 3)
            )
        data.update(
            mean_ms=round(float(values.mean()), 3),
            p50_ms=round(float(p50), 3),
            p95_ms=round(float(p95), 3),
            p99_ms=round(float(p99), 3),
            cv=round(float(values.std() / values.mean()), 3) if values.size > 1 else 0.0,
        )
        return data


def pass_p95s(passes: Sequence[LoadResult]) -> list[float]:
    """Each pass's p95 (``passes``: load results of one rate), in ms."""
    return [float(run.summary()["p95_ms"]) for run in passes]


def pass_median_p95(passes: Sequence[LoadResult]) -> float:
    """The median over ``passes`` (load results of one rate) of each pass's p95, in ms: the
    p95 validate judges, and the one the loop's contention is fitted to."""
    return float(np.median(pass_p95s(passes)))


def merge_results(results: Sequence[LoadResult]) -> LoadResult:
    """Several measurements of one level as one: counts and windows summed, latencies pooled,
    throughput over the total window."""
    window = sum(r.window_s for r in results)
    return LoadResult(
        kind=results[0].kind,
        level=results[0].level,
        offered=sum(r.offered for r in results),
        completed=sum(r.completed for r in results),
        errors=sum(r.errors for r in results),
        drops=sum(r.drops for r in results),
        window_s=window,
        throughput=sum(r.throughput * r.window_s for r in results) / window,
        latencies_ms=[v for r in results for v in r.latencies_ms],
        send_lag_ms=[v for r in results for v in r.send_lag_ms],
        batches=sum((r.batches for r in results if r.batches), BatchCounts())
        if all(r.batches is not None for r in results)
        else None,
    )


def poisson_arrivals(rate: float, horizon_s: float, seed: int) -> np.ndarray:
    """Arrival times (s from 0) of a Poisson process at ``rate`` up to ``horizon_s``; the same
    seed gives the same times (the generator and the model use this one function)."""
    rng = np.random.default_rng(seed)
    expected = int(rate * horizon_s * 1.2 + 50)
    times = np.cumsum(rng.exponential(1.0 / rate, expected))
    while times[-1] < horizon_s:
        more = np.cumsum(rng.exponential(1.0 / rate, expected)) + times[-1]
        times = np.concatenate([times, more])
    return times[times < horizon_s]


def load_texts(limit: int = 2000) -> tuple[str, ...]:
    """Customer messages from the intent service's shipped sample (Classify inputs)."""
    path = (
        Path(__file__).resolve().parents[2]
        / "services/intent/resources/bitext_customer_support_sample.csv.gz"
    )
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [
            row["instruction"] for _, row in zip(range(limit), csv.DictReader(handle), strict=False)
        ]
    return tuple(rows)


def _make_call(
    workload: Workload, channel: Any, draw: random.Random
) -> Callable[[], Awaitable[Any]]:
    """One call of ``workload`` on ``channel``, its input drawn from ``draw`` (``Workload``)."""
    if workload.service == "echo":
        from shoptwin.v1 import echo_pb2, echo_pb2_grpc

        echo = echo_pb2_grpc.EchoServiceStub(channel)
        request = echo_pb2.EchoRequest(payload=b"x" * 64)

        async def call_echo() -> Any:
            return await echo.Echo(request)

        return call_echo
    if workload.service == "recommendation":
        from shoptwin.v1 import recommendation_pb2, recommendation_pb2_grpc

        rec = recommendation_pb2_grpc.RecommendationServiceStub(channel)
        users = workload.inputs or tuple(f"user-{i}" for i in range(100))
        requests = [recommendation_pb2.RecommendRequest(user_id=u, k=workload.k) for u in users]

        async def call_recommend() -> Any:
            return await rec.Recommend(requests[draw.randrange(len(requests))])

        return call_recommend
    if workload.service == "intent":
        from shoptwin.v1 import intent_pb2, intent_pb2_grpc

        intent = intent_pb2_grpc.IntentServiceStub(channel)
        texts = workload.inputs or ("where is my order",)
        requests_i = [intent_pb2.ClassifyRequest(text=t, skip_order_lookup=True) for t in texts]

        async def call_classify() -> Any:
            return await intent.Classify(requests_i[draw.randrange(len(requests_i))])

        return call_classify
    raise ValueError(f"workload: unknown {workload.service}.{workload.rpc}")


async def _closed(job: ClosedJob, call: Callable[[], Awaitable[Any]]) -> LoadResult:
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + job.warmup_s
    stop_at = measure_from + job.duration_s
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while True:
            sent = loop.time()
            if sent >= stop_at:
                return
            try:
                await call()
            except Exception:
                if measure_from <= loop.time() <= stop_at:
                    errors += 1
                continue
            done = loop.time()
            # A call counts when it finished inside the window, wherever it was sent: the
            # callers are in their steady state by then, and completions per second of
            # window are the throughput. Counting only calls also *sent* inside the window
            # drops the last latency's worth of it: with 64 callers at 330 ms a call against
            # a pass's 0.75 s window, over 40 % of the calls (and the slow ones first).
            if measure_from <= done <= stop_at:
                latencies.append((done - sent) * 1000.0)

    await asyncio.gather(*(worker() for _ in range(job.concurrency)))
    return LoadResult(
        kind="closed",
        level=job.concurrency,
        offered=len(latencies) + errors,
        completed=len(latencies),
        errors=errors,
        drops=0,
        window_s=job.duration_s,
        throughput=len(latencies) / job.duration_s,
        latencies_ms=latencies,
    )


async def _open(job: OpenJob, call: Callable[[], Awaitable[Any]]) -> LoadResult:
    loop = asyncio.get_running_loop()
    arrivals = poisson_arrivals(job.rate, job.warmup_s + job.duration_s, job.seed)
    start = loop.time() + 0.05
    measure_from = start + job.warmup_s
    stop_at = measure_from + job.duration_s
    latencies: list[float] = []
    completions_in_window = 0
    errors = 0
    drops = 0
    offered = 0
    in_flight = 0
    tasks: set[asyncio.Task[None]] = set()

    send_lag: list[float] = []

    async def one(scheduled: float) -> None:
        nonlocal errors, in_flight, completions_in_window
        if scheduled >= measure_from:
            send_lag.append((loop.time() - scheduled) * 1000.0)
        try:
            await asyncio.wait_for(call(), job.timeout_s)
        except Exception:
            if scheduled >= measure_from:
                errors += 1
            return
        finally:
            in_flight -= 1
        done = loop.time()
        if measure_from <= done <= stop_at:
            completions_in_window += 1
        if scheduled >= measure_from:
            latencies.append((done - scheduled) * 1000.0)

    for offset in arrivals.tolist():
        scheduled = start + offset
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        measured = scheduled >= measure_from
        offered += measured
        if in_flight >= job.max_in_flight:
            drops += measured
            continue
        in_flight += 1
        task = asyncio.create_task(one(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return LoadResult(
        kind="open",
        level=job.rate,
        offered=offered,
        completed=len(latencies),
        errors=errors,
        drops=drops,
        window_s=job.duration_s,
        throughput=completions_in_window / job.duration_s,
        latencies_ms=latencies,
        send_lag_ms=send_lag,
    )


async def _run_jobs(jobs: Sequence[ClosedJob | OpenJob], draw: random.Random) -> list[LoadResult]:
    from services.runtime.client import ChannelOptions, create_aio_channel

    results: list[LoadResult] = []
    channels: dict[str, Any] = {}
    try:
        for job in jobs:
            target = job.workload.target
            if target not in channels:
                channels[target] = create_aio_channel(
                    target, ChannelOptions(retry=None, default_timeout_s=30.0)
                )
            call = _make_call(job.workload, channels[target], draw)
            url = job.workload.metrics_url
            # Between jobs nothing is in flight, so a blocking scrape holds nothing up.
            before = _counts_or_none(url, job.workload.service)
            if isinstance(job, ClosedJob):
                result = await _closed(job, call)
            else:
                result = await _open(job, call)
            # Let the last calls' effects (GC, batcher) settle before the next level.
            await asyncio.sleep(0.2)
            after = _counts_or_none(url, job.workload.service) if before is not None else None
            if before is not None and after is not None:
                result.batches = after - before
            results.append(result)
    finally:
        for channel in channels.values():
            await channel.close(None)
    return results


def _serve(connection: Any) -> None:
    """The generator process: run each batch of jobs received, send the results back. One
    stream of input draws for the process's life, so each job gets inputs of its own."""
    draw = random.Random(INPUT_SEED)
    while True:
        jobs = connection.recv()
        if jobs is None:
            return
        try:
            connection.send(("ok", asyncio.run(_run_jobs(jobs, draw))))
        except Exception as exc:  # report to the parent instead of dying silently
            connection.send(("error", f"{type(exc).__name__}: {exc}"))


class LoadGenerator:
    """A generator process (``spawn``); create it before this process initialises gRPC."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        child.close()

    def run(self, jobs: Sequence[ClosedJob | OpenJob]) -> list[LoadResult]:
        """Run ``jobs`` one after another in the generator; their results in order."""
        self._connection.send(list(jobs))
        status, payload = self._connection.recv()
        if status != "ok":
            raise RuntimeError(f"load generator: {payload}")
        return list(payload)

    def close(self) -> None:
        """Stop the generator process."""
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._connection.send(None)
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout=5)
        self._connection.close()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def settle(seconds: float) -> None:
    """Sleep between measurements so one level's backlog does not leak into the next."""
    time.sleep(seconds)
