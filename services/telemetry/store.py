"""Storage of readings behind a small interface; SQLite in WAL mode is the embedded default.

Layout (SQLite):

- ``readings``: one row per reading, ``WITHOUT ROWID`` with primary key (device_id, sequence),
  so the rows of a device lie together in key order and a duplicate cannot be stored twice.
- ``devices``: per device its fleet, its acknowledged sequence (every reading at or below it is
  durable) and its latest reading; written in the same transaction as the readings, so the
  acknowledged sequence survives a crash exactly as far as the readings do.
- ``buckets``: downsampled history (count, min/max/sum per field, last position).

Only one thread (the ingest writer) calls the write methods; readers open their own
connections, which WAL lets run beside the writer.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from services.telemetry.model import COLUMNS, Bucket, DeviceRecord, FieldStats, Row, aggregate

_LATEST = tuple(f"l_{name}" for name in COLUMNS)
_STATS = ("speed", "temperature", "battery")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS readings (
    device_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    fleet_id TEXT NOT NULL,
    latitude REAL,
    longitude REAL,
    speed_mps REAL,
    heading_deg REAL,
    temperature_c REAL,
    battery_pct REAL,
    door_open INTEGER,
    PRIMARY KEY (device_id, sequence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    acked_sequence INTEGER NOT NULL,
    {", ".join(_LATEST)}
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buckets (
    device_id TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    width_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    last_time_ms INTEGER NOT NULL,
    last_latitude REAL,
    last_longitude REAL,
    {", ".join(f"{s}_n INTEGER, {s}_min REAL, {s}_max REAL, {s}_sum REAL" for s in _STATS)},
    PRIMARY KEY (device_id, start_ms)
) WITHOUT ROWID;
"""

_INSERT = f"INSERT OR IGNORE INTO readings VALUES ({', '.join('?' * len(COLUMNS))})"
_UPSERT_DEVICE = f"INSERT OR REPLACE INTO devices VALUES ({', '.join('?' * (3 + len(COLUMNS)))})"
_BUCKET_COLUMNS = 7 + 4 * len(_STATS)


class TelemetryStore(Protocol):
    """What the ingest writer and the queries need from storage."""

    def load_devices(self) -> list[DeviceRecord]:
        """Every device with its acknowledged sequence and latest reading."""

    def load_unacked(self, acked: dict[str, int]) -> dict[str, list[int]]:
        """Per device, the stored sequences above its acknowledged one (out-of-order arrivals
        waiting for a gap to fill)."""

    def commit(self, rows: list[Row], devices: list[DeviceRecord]) -> int:
        """Store ``rows`` and the device records in one durable transaction; returns how many
        rows were new."""

    def query_raw(self, device_id: str, start_ms: int, end_ms: int, limit: int) -> list[Row]:
        """Raw readings of a device with start_ms <= time < end_ms, oldest first."""

    def query_rows_for_buckets(self, device_id: str, start_ms: int, end_ms: int) -> list[Row]:
        """Raw readings of a device in [start_ms, end_ms), in no particular order."""

    def query_buckets(self, device_id: str, start_ms: int, end_ms: int) -> list[Bucket]:
        """Stored (downsampled) buckets starting in [start_ms, end_ms), oldest first."""

    def downsample(self, device_id: str, cutoff_ms: int, acked: int, width_ms: int) -> int:
        """Fold the device's expired readings (see :meth:`delete_raw`) into stored buckets of
        ``width_ms`` and delete them; returns the readings folded."""

    def delete_raw(self, device_id: str, cutoff_ms: int, acked: int) -> int:
        """Delete the device's expired readings: in sequence order, at or below ``acked``,
        those before the first one at or after ``cutoff_ms``. A device numbers readings as it
        measures them, so this is every reading older than the cutoff, found without scanning
        the device's whole history."""

    def delete_buckets(self, cutoff_ms: int) -> int:
        """Delete stored buckets that start before ``cutoff_ms``."""

    def close(self) -> None:
        """Close every connection."""


class SQLiteStore:
    """:class:`TelemetryStore` on one SQLite file in WAL mode."""

    def __init__(self, path: Path, *, synchronous: str = "normal") -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._synchronous = synchronous.upper()
        self._writer = self._connect()
        self._writer.executescript(SCHEMA)
        # Checkpoints (copying the WAL into the database file, with an fsync) run on their own
        # thread and connection, so the writer never stalls on them.
        self._writer.execute("PRAGMA wal_autocheckpoint=0")
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._stop_checkpoints = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="telemetry-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # Takes effect only on a new database (before WAL mode is set): larger pages mean
        # fewer splits and a shallower B-tree per inserted row.
        conn.execute("PRAGMA page_size=16384")
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit is durable once written to the WAL, which the OS keeps
        # across a killed process; only power loss can roll back the last commits. FULL also
        # fsyncs the WAL on every commit.
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _checkpoint_loop(self, interval_s: float = 0.25) -> None:
        conn = self._connect()
        try:
            while not self._stop_checkpoints.wait(interval_s):
                # PASSIVE never blocks the writer or readers; once everything is copied, the
                # writer starts the WAL over from its beginning.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # -- writer side ------------------------------------------------------------------------

    def load_devices(self) -> list[DeviceRecord]:
        records = []
        for row in self._writer.execute("SELECT * FROM devices"):
            latest = tuple(row[3:])
            records.append(
                DeviceRecord(
                    device_id=row[0],
                    fleet_id=row[1],
                    acked_sequence=row[2],
                    latest=latest if latest[0] is not None else None,
                )
            )
        return records

    def load_unacked(self, acked: dict[str, int]) -> dict[str, list[int]]:
        unacked: dict[str, list[int]] = {}
        query = "SELECT sequence FROM readings WHERE device_id = ? AND sequence > ?"
        for device_id, acked_sequence in acked.items():
            seqs = [s for (s,) in self._writer.execute(query, (device_id, acked_sequence))]
            if seqs:
                unacked[device_id] = seqs
        return unacked

    def commit(self, rows: list[Row], devices: list[DeviceRecord]) -> int:
        conn = self._writer
        conn.execute("BEGIN")
        try:
            before = conn.total_changes
            conn.executemany(_INSERT, rows)
            inserted = conn.total_changes - before
            conn.executemany(_UPSERT_DEVICE, (_device_values(d) for d in devices))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return inserted

    def _expired(self, device_id: str, cutoff_ms: int, acked: int) -> list[Row]:
        cursor = self._writer.execute(
            f"SELECT {', '.join(COLUMNS)} FROM readings "
            "WHERE device_id = ? AND sequence <= ? ORDER BY sequence",
            (device_id, acked),
        )
        expired: list[Row] = []
        try:
            for row in cursor:
                if row[2] >= cutoff_ms:
                    break
                expired.append(row)
        finally:
            cursor.close()
        return expired

    def downsample(self, device_id: str, cutoff_ms: int, acked: int, width_ms: int) -> int:
        conn = self._writer
        rows = self._expired(device_id, cutoff_ms, acked)
        if not rows:
            return 0
        fresh = aggregate(rows, width_ms)
        starts = [b.start_ms for b in fresh]
        existing = {
            b.start_ms: b
            for b in self._buckets(
                conn,
                "SELECT * FROM buckets WHERE device_id = ? AND start_ms >= ? AND start_ms <= ?",
                (device_id, starts[0], starts[-1]),
            )
        }
        for bucket in fresh:
            old = existing.get(bucket.start_ms)
            if old is not None:
                bucket.merge(old)
        conn.execute("BEGIN")
        try:
            conn.executemany(
                f"INSERT OR REPLACE INTO buckets VALUES ({', '.join('?' * _BUCKET_COLUMNS)})",
                [_bucket_values(device_id, b) for b in fresh],
            )
            conn.execute(
                "DELETE FROM readings WHERE device_id = ? AND sequence <= ?",
                (device_id, rows[-1][1]),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return len(rows)

    def delete_raw(self, device_id: str, cutoff_ms: int, acked: int) -> int:
        rows = self._expired(device_id, cutoff_ms, acked)
        if not rows:
            return 0
        self._writer.execute(
            "DELETE FROM readings WHERE device_id = ? AND sequence <= ?", (device_id, rows[-1][1])
        )
        return len(rows)

    def delete_buckets(self, cutoff_ms: int) -> int:
        cursor = self._writer.execute("DELETE FROM buckets WHERE start_ms < ?", (cutoff_ms,))
        return cursor.rowcount

    # -- reader side ------------------------------------------------------------------------

    def query_raw(self, device_id: str, start_ms: int, end_ms: int, limit: int) -> list[Row]:
        # No time index (it would halve the insert rate): the primary key keeps a device's
        # rows together, so this scans one device's rows within the retention period.
        return (
            self._reader()
            .execute(
                f"SELECT {', '.join(COLUMNS)} FROM readings "
                "WHERE device_id = ? AND time_ms >= ? AND time_ms < ? "
                "ORDER BY time_ms, sequence LIMIT ?",
                (device_id, start_ms, end_ms, limit),
            )
            .fetchall()
        )

    def query_rows_for_buckets(self, device_id: str, start_ms: int, end_ms: int) -> list[Row]:
        """Raw readings of a device in [start_ms, end_ms), in no particular order."""
        return (
            self._reader()
            .execute(
                f"SELECT {', '.join(COLUMNS)} FROM readings "
                "WHERE device_id = ? AND time_ms >= ? AND time_ms < ?",
                (device_id, start_ms, end_ms),
            )
            .fetchall()
        )

    def query_buckets(self, device_id: str, start_ms: int, end_ms: int) -> list[Bucket]:
        return self._buckets(
            self._reader(),
            "SELECT * FROM buckets WHERE device_id = ? AND start_ms >= ? AND start_ms < ? "
            "ORDER BY start_ms",
            (device_id, start_ms, end_ms),
        )

    def count_readings(self) -> int:
        """How many raw readings are stored (for tests and the benchmark)."""
        return int(self._reader().execute("SELECT count(*) FROM readings").fetchone()[0])

    @staticmethod
    def _buckets(conn: sqlite3.Connection, query: str, params: tuple[object, ...]) -> list[Bucket]:
        buckets = []
        for row in conn.execute(query, params):
            bucket = Bucket(row[1], row[2], row[3], row[4], row[5], row[6])
            for k, name in enumerate(_STATS):
                n, low, high, total = row[7 + 4 * k : 11 + 4 * k]
                stats = FieldStats(n, low, high, total) if n else FieldStats()
                setattr(bucket, name, stats)
            buckets.append(bucket)
        return buckets

    def close(self) -> None:
        self._stop_checkpoints.set()
        self._checkpointer.join()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._writer.close()


def _device_values(record: DeviceRecord) -> tuple[object, ...]:
    latest: Iterable[object] = record.latest if record.latest is not None else (None,) * 11
    return (record.device_id, record.fleet_id, record.acked_sequence, *latest)


def _bucket_values(device_id: str, bucket: Bucket) -> tuple[object, ...]:
    values: list[object] = [
        device_id,
        bucket.start_ms,
        bucket.width_ms,
        bucket.count,
        bucket.last_time_ms,
        bucket.last_latitude,
        bucket.last_longitude,
    ]
    for stats in (bucket.speed, bucket.temperature, bucket.battery):
        if stats.n:
            values += [stats.n, stats.low, stats.high, stats.total]
        else:
            values += [0, None, None, None]
    return tuple(values)
