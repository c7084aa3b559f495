"""The service's batch counts as the load generator reads them: a real Prometheus endpoint,
differences over a job, pooled over passes."""

from __future__ import annotations

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
    assert scrape_batches(url, "recommendation") == BatchCounts()  # before the first batch
    before = scrape_batches(url, "recommendation")
    rec.observe(1, 0.003)
    rec.observe(5, 0.009)
    during = scrape_batches(url, "recommendation") - before
    assert (during.batches, during.items) == (2.0, 6.0)
    assert abs(during.busy_s - 0.012) < 1e-9
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
