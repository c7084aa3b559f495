"""The service's batch counts as the load generator reads them: a real Prometheus endpoint,
differences over a job, pooled over passes."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from services.runtime.metrics import BatchMetrics
from services.runtime.process import free_port
from simulator.capacity.measure import BatchCounts, LoadResult, merge_results, scrape_batches


def test_scrape_reads_one_services_batches_from_a_live_endpoint() -> None:
    registry = CollectorRegistry()
    port = free_port()
    start_http_server(port, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{port}/metrics"
    rec = BatchMetrics.create(registry, "recommendation")
    before = scrape_batches(url, "recommendation")
    assert (before.batches, before.items, before.busy_s) == (0.0, 0.0, 0.0)
    assert before.by_size["1"].count == 0.0  # every size class is there from the start
    rec.observe(1, 0.003)
    rec.observe(5, 0.009)
    rec.observe(11, 0.02)
    during = scrape_batches(url, "recommendation") - before
    assert (during.batches, during.items) == (3.0, 17.0)
    assert abs(during.busy_s - 0.032) < 1e-9
    # By size class, with the cumulative bucket counts around each duration.
    lone, five, eleven = (during.by_size[label] for label in ("1", "5", "9-12"))
    assert (lone.count, five.count, eleven.count) == (1.0, 1.0, 1.0)
    assert abs(eleven.sum_s - 0.02) < 1e-9
    below = lone.bounds.index(max(b for b in lone.bounds if b < 0.003))
    assert lone.cumulative[below] == 0.0 and lone.cumulative[below + 1] == 1.0
    assert during.by_size["2"].count == 0.0
    assert scrape_batches(url, "intent") == BatchCounts()  # another service's series


def _result(batches: BatchCounts | None) -> LoadResult:
    return LoadResult("open", 10.0, 10, 10, 0, 0, 1.0, 10.0, [1.0] * 10, batches=batches)


def test_batch_size_and_time_are_pooled_over_passes() -> None:
    merged = merge_results(
        [_result(BatchCounts(2, 2, 0.006)), _result(BatchCounts(1, 4, 0.010))]
    ).summary()
    assert merged["batch_size"] == 2.0 and merged["batch_ms"] == round(16 / 3, 3)
    # One pass without counts (a service whose endpoint is unknown): no batch columns.
    partial = merge_results([_result(BatchCounts(2, 2, 0.006)), _result(None)]).summary()
    assert "batch_size" not in partial and "batch_ms" not in partial


def test_an_endpoint_that_does_not_answer_leaves_the_measurement_without_batches() -> None:
    from simulator.capacity.measure import _counts_or_none

    assert _counts_or_none(None, "intent") is None
    assert _counts_or_none(f"http://127.0.0.1:{free_port()}/metrics", "intent") is None


def test_a_closed_loop_counts_every_call_that_finishes_in_its_window() -> None:
    # 16 callers, 200 ms a call, a window of 400 ms after 500 ms of warm-up: calls finish
    # at 0.2, 0.4, 0.6, 0.8 and 1.0 s, two rounds of them in [0.5, 0.9] (100 ms from either
    # edge), 80 calls a second. Counting only the calls also sent inside the window saw the
    # round sent at 0.6 s alone (40/s) and, of calls whose time varies, only the short ones
    # near the window's end.
    import asyncio

    from simulator.capacity.measure import ClosedJob, Workload, _closed

    async def call() -> None:
        await asyncio.sleep(0.2)

    job = ClosedJob(Workload("echo", "Echo", "unused:0"), 16, 0.4, 0.5)
    result = asyncio.run(_closed(job, call))
    assert result.completed == 32
    assert result.throughput == pytest.approx(16 / 0.2)
    assert min(result.latencies_ms) >= 200.0


class _RecordingChannel:
    """Stands in for a grpc.aio channel: every unary call returns at once and records its
    request."""

    def __init__(self) -> None:
        self.requests: list[object] = []

    def unary_unary(self, *_args: object, **_kwargs: object) -> object:
        async def invoke(request: object, **_call_kwargs: object) -> None:
            self.requests.append(request)

        return invoke

    stream_stream = unary_stream = stream_unary = unary_unary


def test_each_call_draws_its_input_so_a_jobs_length_does_not_choose_its_inputs() -> None:
    # Inputs differ in cost, and when every job walked one fixed order from its first call
    # a short job measured only the head of that order (docs/capacity-runs.md, "Runs 43-44").
    # Two jobs now get different inputs, and the calls together cover them evenly.
    import asyncio
    import random
    from collections import Counter

    from simulator.capacity.measure import Workload, _make_call

    users = tuple(f"user-{i}" for i in range(50))
    workload = Workload("recommendation", "Recommend", "unused:0", users)
    draw = random.Random(0)

    def job(calls: int) -> list[str]:
        channel = _RecordingChannel()
        call = _make_call(workload, channel, draw)

        async def run() -> None:
            for _ in range(calls):
                await call()

        asyncio.run(run())
        return [request.user_id for request in channel.requests]  # type: ignore[attr-defined]

    first, second = job(20), job(20)
    assert first != second
    counts = Counter(job(5000))
    assert set(counts) == set(users)
    assert max(counts.values()) < 1.4 * 5000 / 50 and min(counts.values()) > 0.6 * 5000 / 50
