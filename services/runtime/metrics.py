"""Prometheus metrics of the RPC layer: a request counter and a latency histogram per method and
code, and an in-flight gauge, served over HTTP.

With several worker processes (SO_REUSEPORT) each worker writes its samples to
``PROMETHEUS_MULTIPROC_DIR`` and the parent process serves the sum, so a scrape sees the
service, not one worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


@dataclass
class RpcMetrics:
    requests: Counter
    latency: Histogram
    in_flight: Gauge
    #: Where a service registers metrics of its own (None in a worker of a multi-process
    #: server: its samples go to the multiprocess files the parent sums).
    registry: CollectorRegistry | None = None

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> RpcMetrics:
        """Create the RPC metrics in ``registry``.

        A worker of a multi-process server passes ``None``: its samples then go only to the
        multiprocess value files that the parent aggregates.
        """
        requests = Counter(
            "shoptwin_rpc_requests",
            "RPCs handled, by method and status code",
            ["service", "method", "code"],
            registry=registry,
        )
        latency = Histogram(
            "shoptwin_rpc_duration_seconds",
            "RPC handling time, by method and status code",
            ["service", "method", "code"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        in_flight = Gauge(
            "shoptwin_rpc_in_flight",
            "RPCs being handled",
            ["service", "method"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        return cls(requests, latency, in_flight, registry)


#: Requests (recommendation) or texts (intent) per micro-batch.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Batch times by size: 25 % apart from 0.5 ms to 5 s, fine enough to read a batch size's
#: spread (its cv) from the counts, not only its mean.
BATCH_SPREAD_BUCKETS = tuple(round(0.0005 * 1.25**i, 7) for i in range(42))
#: Upper ends of the size classes of ``shoptwin_batch_duration_by_size_seconds``: each size
#: up to 8, then classes narrow enough that their batches last about as long.
BATCH_SIZE_CLASSES = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 48, 64, 128)


def size_class(size: int) -> str:
    """The ``size`` label of a batch of ``size`` items: "3", "9-12", "129+"."""
    lower = 1
    for upper in BATCH_SIZE_CLASSES:
        if size <= upper:
            return str(upper) if lower == upper else f"{lower}-{upper}"
        lower = upper + 1
    return f"{lower}+"


@dataclass(frozen=True)
class BatchMetrics:
    """Size and duration of each micro-batch a service runs (``shoptwin_batch_size``,
    ``shoptwin_batch_duration_seconds``, labelled by service). The duration is the batcher's
    own time: from handing the batch to the model (thread or ranking process) to having its
    answers, so sum/count over an interval is the batcher's busy time per batch. An SRE reads
    how well batching amortises under the current load; ``shoptwin capacity`` reads the same
    series to set the model's batches beside the real ones."""

    size: Histogram
    seconds: Histogram
    #: The same durations by size class (``size_class``), finely bucketed.
    by_size: dict[str, Histogram]

    @classmethod
    def create(cls, registry: CollectorRegistry | None, service: str) -> BatchMetrics:
        size = Histogram(
            "shoptwin_batch_size",
            "Items per micro-batch, by service",
            ["service"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        seconds = Histogram(
            "shoptwin_batch_duration_seconds",
            "Time from handing a micro-batch to the model to having its answers, by service",
            ["service"],
            buckets=BATCH_SECONDS_BUCKETS,
            registry=registry,
        )
        by_size = Histogram(
            "shoptwin_batch_duration_by_size_seconds",
            "Micro-batch durations by batch size class, by service",
            ["service", "size"],
            buckets=BATCH_SPREAD_BUCKETS,
            registry=registry,
        )
        classes = [size_class(upper) for upper in BATCH_SIZE_CLASSES]
        classes.append(size_class(BATCH_SIZE_CLASSES[-1] + 1))
        return cls(
            size.labels(service),
            seconds.labels(service),
            {label: by_size.labels(service, label) for label in classes},
        )

    def observe(self, size: int, seconds: float) -> None:
        self.size.observe(size)
        self.seconds.observe(seconds)
        self.by_size[size_class(size)].observe(seconds)


def serve_metrics(port: int, host: str, registry: CollectorRegistry) -> None:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread."""
    start_http_server(port, addr=host, registry=registry)


def multiprocess_registry() -> CollectorRegistry:
    """A registry that sums the samples every worker wrote to PROMETHEUS_MULTIPROC_DIR."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        raise RuntimeError("PROMETHEUS_MULTIPROC_DIR must be set before workers start")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry
