"""The durable feedback log: a SQLite database in WAL mode, idempotent on event id.

Every feedback event is appended here before it is acknowledged, so an acknowledged event
survives a crash; the next training run reads the same file (``shoptwin train recommendation
--data feedback.db``). Writes run in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id   TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    item_id    TEXT NOT NULL,
    event_type INTEGER NOT NULL,
    quantity   REAL NOT NULL,
    event_time REAL NOT NULL,
    received   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (event_time);
"""


@dataclass(frozen=True)
class StoredEvent:
    """One feedback event as stored (time in epoch seconds)."""

    event_id: str
    user_id: str
    item_id: str
    event_type: int
    quantity: float
    event_time: float


class FeedbackStore:
    """Append-only event log; ``append`` returns which events were new (not resends)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection guarded by a lock: writes are serialised anyway, and the lock lets the
        # event loop hand appends to any worker thread.
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        # FULL: an acknowledged event must survive power loss, not only a process crash.
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.executescript(SCHEMA)

    def append(self, events: Sequence[StoredEvent], received: float) -> list[bool]:
        """Store ``events`` in one transaction; per event, True when newly stored.

        Returns only after the commit, so the caller may acknowledge afterwards.
        """
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                fresh: list[bool] = []
                for event in events:
                    cursor.execute(
                        "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            event.event_id,
                            event.user_id,
                            event.item_id,
                            event.event_type,
                            event.quantity,
                            event.event_time,
                            received,
                        ),
                    )
                    fresh.append(cursor.rowcount == 1)
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return fresh

    def events_since(self, since: float, after_row: int = 0) -> tuple[list[StoredEvent], int]:
        """Events with ``event_time >= since`` stored after row ``after_row``, in storage order,
        and the last row number seen (pass it back to fetch only what came later)."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT rowid, event_id, user_id, item_id, event_type, quantity, event_time "
                "FROM events WHERE event_time >= ? AND rowid > ? ORDER BY rowid",
                (since, after_row),
            ).fetchall()
            last = self._connection.execute("SELECT COALESCE(MAX(rowid), 0) FROM events").fetchone()
        events = [StoredEvent(r[1], r[2], r[3], int(r[4]), float(r[5]), float(r[6])) for r in rows]
        return events, max(int(last[0]), after_row)

    def count(self) -> int:
        """Number of stored events."""
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._connection.close()
