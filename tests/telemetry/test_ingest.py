"""Exactly-once ingestion: resends, gaps, shuffled batches, duplicates, the reordering window,
restarts, group commit and backpressure (domain level, real SQLite files)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from pathlib import Path

from services.telemetry.ingest import Ingestor
from services.telemetry.model import DeviceRecord, Row
from services.telemetry.store import SQLiteStore
from tests.telemetry.helpers import ingest, open_telemetry, row


def stored_sequences(path: Path, device_id: str) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [
            s
            for (s,) in conn.execute(
                "SELECT sequence FROM readings WHERE device_id = ? ORDER BY sequence", (device_id,)
            )
        ]
    finally:
        conn.close()


async def test_in_order_batches_are_stored_and_acked(tmp_path: Path) -> None:
    async with open_telemetry(tmp_path) as t:
        result = await ingest(t, [row("a", s) for s in range(1, 11)])
        assert (result.stored, result.duplicates, result.rejected) == (10, 0, [])
        assert result.device_acks == [("a", 10)]
    assert stored_sequences(tmp_path / "telemetry.sqlite3", "a") == list(range(1, 11))


async def test_resend_of_acknowledged_readings_is_a_duplicate(tmp_path: Path) -> None:
    async with open_telemetry(tmp_path) as t:
        await ingest(t, [row("a", s) for s in range(1, 6)])
        result = await ingest(t, [row("a", s) for s in range(3, 9)])
        assert (result.stored, result.duplicates) == (3, 3)
        assert result.device_acks == [("a", 8)]
    assert stored_sequences(tmp_path / "telemetry.sqlite3", "a") == list(range(1, 9))


async def test_gap_holds_the_ack_until_it_is_filled(tmp_path: Path) -> None:
    async with open_telemetry(tmp_path) as t:
        first = await ingest(t, [row("a", s) for s in (1, 2, 3, 6, 7)])
        assert first.stored == 5
        assert first.device_acks == [("a", 3)]  # 4 and 5 missing: 6 and 7 wait
        second = await ingest(t, [row("a", 5)])
        assert second.device_acks == [("a", 3)]
        third = await ingest(t, [row("a", 4), row("a", 6)])  # 6 resent: a duplicate
        assert (third.stored, third.duplicates) == (1, 1)
        assert third.device_acks == [("a", 7)]


async def test_shuffled_batches_with_duplicates_store_each_reading_once(tmp_path: Path) -> None:
    rng = random.Random(42)
    devices = [f"van-{i}" for i in range(5)]
    readings = [row(d, s) for d in devices for s in range(1, 201)]
    # Every reading once, a third of them again (resends), then shuffled and cut at random.
    sent = readings + rng.sample(readings, len(readings) // 3)
    rng.shuffle(sent)
    stored = duplicates = 0
    async with open_telemetry(tmp_path) as t:
        position = 0
        last_acks: dict[str, int] = {}
        while position < len(sent):
            size = rng.randint(1, 60)
            result = await ingest(t, sent[position : position + size])
            position += size
            stored += result.stored
            duplicates += result.duplicates
            for device_id, acked in result.device_acks:
                assert acked >= last_acks.get(device_id, 0)  # acks never go back
                last_acks[device_id] = acked
        assert last_acks == dict.fromkeys(devices, 200)
    assert stored == len(readings)
    assert duplicates == len(sent) - len(readings)
    for device_id in devices:
        assert stored_sequences(tmp_path / "telemetry.sqlite3", device_id) == list(range(1, 201))


async def test_duplicates_inside_one_batch(tmp_path: Path) -> None:
    async with open_telemetry(tmp_path) as t:
        result = await ingest(t, [row("a", 1), row("a", 3), row("a", 1), row("a", 3), row("a", 2)])
        assert (result.stored, result.duplicates) == (3, 2)
        assert result.device_acks == [("a", 3)]


async def test_sequence_outside_the_window_is_rejected_and_the_rest_stored(
    tmp_path: Path,
) -> None:
    async with open_telemetry(tmp_path, reorder_window=100) as t:
        await ingest(t, [row("a", s) for s in range(1, 301)])
        result = await ingest(t, [row("a", 250), row("a", 5), row("a", 301), row("a", 900)])
        assert result.stored == 1  # 301
        assert result.duplicates == 1  # 250: behind the ack but inside the window
        fields = {r.index: r.field for r in result.rejected}
        assert fields == {1: "readings[1].sequence", 3: "readings[3].sequence"}
        assert "behind" in result.rejected[0].reason
        assert "ahead" in result.rejected[1].reason
        assert result.device_acks == [("a", 301)]


async def test_acked_and_out_of_order_state_survive_a_restart(tmp_path: Path) -> None:
    async with open_telemetry(tmp_path) as t:
        await ingest(t, [row("a", s) for s in (1, 2, 3, 5, 6)])
    async with open_telemetry(tmp_path) as t:
        assert t.ingestor.acked_sequence("a") == 3
        again = await ingest(t, [row("a", 5)])  # stored before the restart
        assert (again.stored, again.duplicates) == (0, 1)
        filled = await ingest(t, [row("a", 4)])
        assert filled.device_acks == [("a", 6)]
        assert t.latest(["a"], "")[0][1] == 6
    assert stored_sequences(tmp_path / "telemetry.sqlite3", "a") == [1, 2, 3, 4, 5, 6]


class BlockingStore(SQLiteStore):
    """A real store whose commits wait for a gate: storage that has fallen behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()

    def commit(self, rows: list[Row], devices: list[DeviceRecord]) -> int:
        self.gate.wait(10)
        return super().commit(rows, devices)


async def test_batches_queued_while_the_writer_is_busy_share_one_commit(tmp_path: Path) -> None:
    store = BlockingStore(tmp_path / "t.sqlite3")
    ingestor = Ingestor(
        store, reorder_window=1000, max_queued_readings=10_000, max_commit_readings=10_000
    )
    await ingestor.start()
    try:
        futures = [await ingestor.submit([row(f"d{i}", 1)], None, []) for i in range(200)]
        await asyncio.sleep(0.05)
        store.gate.set()
        results = await asyncio.gather(*futures)
        assert all(r.stored == 1 for r in results)
        # The writer took at most the first batch before it blocked; the rest went together.
        assert ingestor.commits <= 2
    finally:
        store.gate.set()
        await ingestor.stop()
        store.close()


async def test_backpressure_blocks_submit_instead_of_buffering(tmp_path: Path) -> None:
    store = BlockingStore(tmp_path / "t.sqlite3")
    ingestor = Ingestor(
        store, reorder_window=1000, max_queued_readings=100, max_commit_readings=1000
    )
    await ingestor.start()
    try:
        first = await ingestor.submit([row("a", s) for s in range(1, 61)], None, [])
        second = await ingestor.submit([row("a", s) for s in range(61, 101)], None, [])
        third = asyncio.create_task(ingestor.submit([row("a", 101)], None, []))
        await asyncio.sleep(0.2)
        assert not third.done()  # 100 readings wait: the caller is held back
        store.gate.set()
        assert (await first).stored == 60
        assert (await second).stored == 40
        result = await (await asyncio.wait_for(third, 10))
        assert result.device_acks == [("a", 101)]
    finally:
        store.gate.set()
        await ingestor.stop()
        store.close()
