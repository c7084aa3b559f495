"""Durable state of live dispatch in SQLite (WAL): fleet, vehicles, orders with their
assignment and position in the route, and plan metadata.

Writes run on one dedicated thread, in submission order, grouped into transactions (group
commit); a caller awaits the commit of its rows before it acknowledges. ``synchronous=FULL``
by default, so an acknowledged write survives a crash of the machine, not only of the process.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.dispatch.live import LiveDispatcher, OrderRecord, OrderState, VehicleRecord
from services.dispatch.problem import (
    DepotSpec,
    GeoPoint,
    OrderSpec,
    PlanePoint,
    Point,
    TimeWindow,
    UnassignedReason,
    VehicleSpec,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet (id INTEGER PRIMARY KEY CHECK (id = 1), depot TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vehicles (
    vehicle_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    in_fleet INTEGER NOT NULL,
    anchor TEXT,
    anchor_time REAL,
    active INTEGER NOT NULL,
    delivered_load INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    vehicle_id TEXT,
    position INTEGER,
    reason TEXT,
    detail TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    final_time REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""


# ------------------------------------------------------------------------ (de)serialisation


def point_to_json(point: Point | None) -> Any:
    if point is None:
        return None
    if isinstance(point, GeoPoint):
        return {"lat": point.latitude, "lon": point.longitude}
    return {"x": point.x, "y": point.y}


def point_from_json(raw: Any) -> Point | None:
    if raw is None:
        return None
    if "lat" in raw:
        return GeoPoint(raw["lat"], raw["lon"])
    return PlanePoint(raw["x"], raw["y"])


def _window_to_json(window: TimeWindow | None) -> Any:
    return None if window is None else [window.start, window.end]


def _window_from_json(raw: Any) -> TimeWindow | None:
    return None if raw is None else TimeWindow(raw[0], raw[1])


def depot_to_json(depot: DepotSpec) -> str:
    return json.dumps(
        {"location": point_to_json(depot.location), "hours": _window_to_json(depot.hours)}
    )


def depot_from_json(text: str) -> DepotSpec:
    raw = json.loads(text)
    location = point_from_json(raw["location"])
    hours = _window_from_json(raw["hours"])
    assert location is not None and hours is not None
    return DepotSpec(location, hours)


def vehicle_to_json(spec: VehicleSpec) -> str:
    return json.dumps(
        {
            "vehicle_id": spec.vehicle_id,
            "capacity": spec.capacity,
            "shift": _window_to_json(spec.shift),
            "start": point_to_json(spec.start),
            "speed": spec.speed,
        }
    )


def vehicle_from_json(text: str) -> VehicleSpec:
    raw = json.loads(text)
    return VehicleSpec(
        vehicle_id=raw["vehicle_id"],
        capacity=raw["capacity"],
        shift=_window_from_json(raw["shift"]),
        start=point_from_json(raw["start"]),
        speed=raw["speed"],
    )


def order_to_json(spec: OrderSpec) -> str:
    return json.dumps(
        {
            "order_id": spec.order_id,
            "location": point_to_json(spec.location),
            "demand": spec.demand,
            "window": _window_to_json(spec.window),
            "service_time": spec.service_time,
        }
    )


def order_from_json(text: str) -> OrderSpec:
    raw = json.loads(text)
    location = point_from_json(raw["location"])
    assert location is not None
    return OrderSpec(
        order_id=raw["order_id"],
        location=location,
        demand=raw["demand"],
        window=_window_from_json(raw["window"]),
        service_time=raw["service_time"],
    )


# ------------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class Rows:
    """Rows captured from the dispatcher at one instant, ready to write."""

    depot: str | None
    vehicles: list[tuple[Any, ...]]
    removed_vehicles: list[str]
    orders: list[tuple[Any, ...]]
    meta: list[tuple[str, float]]


def capture(
    dispatcher: LiveDispatcher,
    *,
    orders: set[str],
    vehicles: set[str],
    fleet: bool,
) -> Rows:
    """Serialise what changed now, so the write can happen later off the event loop."""
    depot = depot_to_json(dispatcher.depot) if fleet and dispatcher.depot is not None else None
    vehicle_rows: list[tuple[Any, ...]] = []
    removed: list[str] = []
    positions: dict[str, tuple[str, int]] = {}
    for vid in vehicles:
        record = dispatcher.vehicles.get(vid)
        if record is None:
            removed.append(vid)
            continue
        vehicle_rows.append(_vehicle_row(record))
        # A route change moves the positions of its orders: persist them all.
        orders = orders | set(record.route)
    for vid, record in dispatcher.vehicles.items():
        for index, oid in enumerate(record.route):
            positions[oid] = (vid, index)
    order_rows = [
        _order_row(dispatcher.orders[oid], positions.get(oid))
        for oid in sorted(orders)
        if oid in dispatcher.orders
    ]
    meta = [
        ("plan_version", float(dispatcher.plan_version)),
        ("cost_before_last_pass", dispatcher.cost_before_last_pass),
        ("cost_after_last_pass", dispatcher.cost_after_last_pass),
        ("updated_at", dispatcher.updated_at),
    ]
    return Rows(depot, vehicle_rows, removed, order_rows, meta)


def _vehicle_row(record: VehicleRecord) -> tuple[Any, ...]:
    anchor = point_to_json(record.anchor)
    return (
        record.spec.vehicle_id,
        vehicle_to_json(record.spec),
        1,
        None if anchor is None else json.dumps(anchor),
        record.anchor_time,
        int(record.active),
        record.delivered_load,
    )


def _order_row(record: OrderRecord, position: tuple[str, int] | None) -> tuple[Any, ...]:
    return (
        record.spec.order_id,
        order_to_json(record.spec),
        record.state.name,
        record.vehicle_id,
        None if position is None else position[1],
        None if record.reason is None else record.reason.name,
        record.detail,
        record.submitted_at,
        record.final_time,
    )


class DispatchStore:
    """SQLite file holding the live plan; one writer thread."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dispatch-db")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Rows, asyncio.Future[None]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.executescript(SCHEMA)
        self._conn = conn

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=True)

    async def write(self, rows: Rows) -> None:
        """Commit ``rows``; returns once durable.

        Group commit: writes that arrive while a commit is in flight wait for it and then go
        out together in the next transaction, so one fsync serves a burst of callers.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((rows, done))
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await loop.run_in_executor(
                        self._executor, self._write, [rows for rows, _ in batch]
                    )
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for _, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._flushing = False

    def _write(self, batch: list[Rows]) -> None:
        conn = self._conn
        assert conn is not None, "store not open"
        conn.execute("BEGIN IMMEDIATE")
        try:
            for rows in batch:  # in order: a later row of the same key wins
                self._write_rows(conn, rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _write_rows(conn: sqlite3.Connection, rows: Rows) -> None:
        if rows.depot is not None:
            conn.execute(
                "INSERT INTO fleet (id, depot) VALUES (1, ?) "
                "ON CONFLICT(id) DO UPDATE SET depot = excluded.depot",
                (rows.depot,),
            )
        conn.executemany(
            "INSERT OR REPLACE INTO vehicles VALUES (?, ?, ?, ?, ?, ?, ?)", rows.vehicles
        )
        conn.executemany(
            "UPDATE vehicles SET in_fleet = 0 WHERE vehicle_id = ?",
            [(v,) for v in rows.removed_vehicles],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows.orders
        )
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows.meta)

    async def load(self) -> LiveDispatcher:
        """The dispatcher as last committed (empty when the file is new)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> LiveDispatcher:
        conn = self._conn
        assert conn is not None, "store not open"
        dispatcher = LiveDispatcher()
        row = conn.execute("SELECT depot FROM fleet WHERE id = 1").fetchone()
        if row is not None:
            dispatcher.depot = depot_from_json(row[0])
        for vid, spec, in_fleet, anchor, anchor_time, active, delivered in conn.execute(
            "SELECT * FROM vehicles ORDER BY vehicle_id"
        ):
            if not in_fleet:
                continue
            dispatcher.vehicles[vid] = VehicleRecord(
                spec=vehicle_from_json(spec),
                anchor=point_from_json(None if anchor is None else json.loads(anchor)),
                anchor_time=anchor_time,
                active=bool(active),
                delivered_load=delivered,
            )
        placed: list[tuple[str, int, str]] = []
        for oid, spec, state, vid, position, reason, detail, submitted, final in conn.execute(
            "SELECT * FROM orders ORDER BY submitted_at, order_id"
        ):
            record = OrderRecord(
                spec=order_from_json(spec),
                state=OrderState[state],
                submitted_at=submitted,
                vehicle_id=vid,
                reason=None if reason is None else UnassignedReason[reason],
                detail=detail,
                final_time=final,
            )
            dispatcher.orders[oid] = record
            if (
                record.state in (OrderState.ASSIGNED, OrderState.EN_ROUTE)
                and vid in dispatcher.vehicles
                and position is not None
            ):
                placed.append((vid, position, oid))
        for vid, _position, oid in sorted(placed):
            dispatcher.vehicles[vid].route.append(oid)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        dispatcher.plan_version = int(meta.get("plan_version", 0))
        dispatcher.cost_before_last_pass = meta.get("cost_before_last_pass", 0.0)
        dispatcher.cost_after_last_pass = meta.get("cost_after_last_pass", 0.0)
        dispatcher.updated_at = meta.get("updated_at", 0.0)
        return dispatcher
