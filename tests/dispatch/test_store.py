"""The SQLite store: concurrent writers (group commit) and a restart on the same file."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from services.dispatch.engine import DispatchEngine, EngineSettings
from services.dispatch.live import OrderState
from services.dispatch.problem import (
    DepotSpec,
    GeoPoint,
    OrderSpec,
    TimeWindow,
    VehicleSpec,
)
from services.dispatch.store import DispatchStore

NOW = 1_800_000_000.0
SETTINGS = EngineSettings(reopt_interval_s=3600.0, solver_executor="thread")


def engine(path: Path) -> DispatchEngine:
    return DispatchEngine(DispatchStore(path), SETTINGS, clock=lambda: NOW)


async def test_concurrent_submits_all_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "plan.sqlite3"
    rng = random.Random(3)
    first = engine(path)
    await first.start()
    await first.configure_fleet(
        DepotSpec(GeoPoint(51.5, -0.12), TimeWindow(NOW, NOW + 36_000)),
        [VehicleSpec(f"van-{i}", 20, start=GeoPoint(51.49, -0.1)) for i in range(4)],
    )
    orders = [
        OrderSpec(
            f"o{i}",
            GeoPoint(51.5 + rng.uniform(-0.05, 0.05), -0.12 + rng.uniform(-0.08, 0.08)),
            rng.randint(1, 4),
            TimeWindow(NOW, NOW + 36_000),
            service_time=120.0,
        )
        for i in range(50)
    ]
    views = await asyncio.gather(*(first.submit(o) for o in orders))
    assert {v.state for v in views} <= {OrderState.ASSIGNED, OrderState.UNASSIGNABLE}
    await first.cancel("o7")
    routes = {vid: list(v.route) for vid, v in first.dispatcher.vehicles.items()}
    states = {oid: (r.state, r.vehicle_id, r.reason) for oid, r in first.dispatcher.orders.items()}
    version = first.dispatcher.plan_version
    await first.stop()

    second = engine(path)
    await second.start()
    try:
        assert {vid: list(v.route) for vid, v in second.dispatcher.vehicles.items()} == routes
        assert {
            oid: (r.state, r.vehicle_id, r.reason) for oid, r in second.dispatcher.orders.items()
        } == states
        assert second.dispatcher.plan_version == version
        assert second.dispatcher.orders["o7"].state is OrderState.CANCELLED
        assert second.dispatcher.vehicles["van-0"].spec.start == GeoPoint(51.49, -0.1)
        assert second.dispatcher.orders["o3"].spec == orders[3]
    finally:
        await second.stop()
