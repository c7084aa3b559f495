"""Retention deletes old raw readings; downsampling folds them into buckets first; range
queries merge stored buckets with raw readings."""

from __future__ import annotations

from pathlib import Path

from services.telemetry.model import aggregate, rebucket
from tests.telemetry.helpers import ingest, open_telemetry, row

HOUR_MS = 3_600_000
T0 = 1_700_000_000_000 // HOUR_MS * HOUR_MS  # an hour boundary


def readings_every_10s(device_id: str, hours: int) -> list:
    """One reading each 10 s for ``hours`` hours, temperature = minute of the hour."""
    count = hours * 360
    return [
        row(device_id, i + 1, T0 + i * 10_000, temperature=float((i // 6) % 60), speed=1.0)
        for i in range(count)
    ]


async def test_retention_without_downsampling_deletes_old_raw(tmp_path: Path) -> None:
    async with open_telemetry(
        tmp_path, raw_retention_s=3600, downsample_resolution_s=0, bucket_retention_s=0
    ) as t:
        await ingest(t, readings_every_10s("a", 3))
        now = T0 + 3 * HOUR_MS
        report = await t.maintain(now_ms=now)
        assert report.deleted_raw == 2 * 360
        assert report.downsampled == 0
        left = await t.query_range("a", 0, now, 0, 100_000)
        assert len(left.rows) == 360
        assert min(r[2] for r in left.rows) >= now - HOUR_MS
        # The acked sequence survives deletion: a late resend is still a duplicate.
        again = await ingest(t, [row("a", 5, T0 + 40_000)])
        assert (again.stored, again.duplicates) == (0, 1)


async def test_downsampling_folds_old_raw_into_buckets(tmp_path: Path) -> None:
    async with open_telemetry(
        tmp_path, raw_retention_s=3600, downsample_resolution_s=60, bucket_retention_s=0
    ) as t:
        rows = readings_every_10s("a", 3)
        await ingest(t, rows)
        now = T0 + 3 * HOUR_MS
        expected = aggregate([r for r in rows if r[2] < now - HOUR_MS], 60_000)
        report = await t.maintain(now_ms=now)
        assert report.downsampled == 2 * 360
        # Minute buckets over the whole range: 120 stored (downsampled) + 60 from raw.
        result = await t.query_range("a", 0, now, 60_000, 100_000)
        assert len(result.buckets) == 180
        assert all(b.count == 6 for b in result.buckets)
        assert [b.temperature.mean for b in result.buckets[:120]] == [
            b.temperature.mean for b in expected
        ]
        # Hourly buckets merge stored minute buckets and raw readings alike.
        hourly = await t.query_range("a", 0, now, HOUR_MS, 100_000)
        assert [b.count for b in hourly.buckets] == [360, 360, 360]
        assert [b.temperature.low for b in hourly.buckets] == [0.0, 0.0, 0.0]
        assert [b.temperature.high for b in hourly.buckets] == [59.0, 59.0, 59.0]
        assert hourly.buckets[0].last_time_ms == T0 + HOUR_MS - 10_000
        # A second pass finds nothing new to fold.
        assert (await t.maintain(now_ms=now)).downsampled == 0


async def test_downsampling_merges_into_a_partly_filled_bucket(tmp_path: Path) -> None:
    async with open_telemetry(
        tmp_path, raw_retention_s=60, downsample_resolution_s=60, bucket_retention_s=0
    ) as t:
        rows = [row("a", i + 1, T0 + i * 10_000, temperature=float(i)) for i in range(6)]
        await ingest(t, rows)
        # First pass: cutoff in the middle of the minute folds 3 readings.
        assert (await t.maintain(now_ms=T0 + 30_000 + 60_000)).downsampled == 3
        assert (await t.maintain(now_ms=T0 + 10 * 60_000)).downsampled == 3
        result = await t.query_range("a", 0, T0 + HOUR_MS, 60_000, 10)
        assert len(result.buckets) == 1
        bucket = result.buckets[0]
        assert bucket.count == 6
        assert (bucket.temperature.low, bucket.temperature.high) == (0.0, 5.0)
        assert bucket.temperature.mean == 2.5


async def test_bucket_retention_deletes_old_buckets(tmp_path: Path) -> None:
    async with open_telemetry(
        tmp_path, raw_retention_s=3600, downsample_resolution_s=60, bucket_retention_s=7200
    ) as t:
        await ingest(t, readings_every_10s("a", 3))
        report = await t.maintain(now_ms=T0 + 3 * HOUR_MS)
        assert report.deleted_buckets == 60  # the first hour of minute buckets
        result = await t.query_range("a", 0, T0 + 3 * HOUR_MS, HOUR_MS, 10)
        assert [b.count for b in result.buckets] == [360, 360]


def test_rebucket_keeps_coarser_buckets_whole() -> None:
    rows = [row("a", i + 1, T0 + i * 1000) for i in range(120)]
    minutes = aggregate(rows, 60_000)
    assert [b.count for b in rebucket(minutes, 1000)] == [60, 60]
    assert [b.count for b in rebucket(minutes, 3_600_000)] == [120]


async def test_raw_range_query_limit_and_truncation(tmp_path: Path) -> None:
    async with open_telemetry(tmp_path) as t:
        await ingest(t, [row("a", i + 1, T0 + i * 1000) for i in range(50)])
        result = await t.query_range("a", T0 + 10_000, T0 + 20_000, 0, 100)
        assert [r[1] for r in result.rows] == list(range(11, 21))
        assert not result.truncated
        cut = await t.query_range("a", 0, T0 + 50_000, 0, 5)
        assert len(cut.rows) == 5 and cut.truncated
