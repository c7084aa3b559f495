"""The live driver against in-process implementations of the four contracts: every call is
counted by status, every order ends delivered/late/failed with a reason, telemetry stored equals
telemetry acknowledged."""

from __future__ import annotations

from grpc import aio

from simulator.live import LiveDriver, LiveTargets, live_ok
from simulator.scenario import parse_scenario
from tests.simulator.fakes import add_all

SCENARIO = """
name: live-test
seed: 5
shoppers_per_day: 9000
catalogue: {items: 120}
shoppers: {area_radius_m: 1200}
session: {add_to_cart_base: 0.3, checkout_probability: 0.95, think_mean_s: 15}
orders: {lead_time_s: 60, slot_length_s: 1800, first_slot_start_s: 0, last_slot_end_s: 86400}
fleet: {vehicles: 3, capacity: 200, batch_readings: 4}
live:
  speed: 600
  duration_h: 0.1
  start_hour: 10
  deadline_s: 3
  drain_timeout_s: 60
"""


async def test_live_driver_end_to_end_against_the_contracts() -> None:
    server = aio.server()
    recommendation, dispatch, telemetry = add_all(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        target = f"127.0.0.1:{port}"
        targets = LiveTargets(target, target, target, target)
        driver = LiveDriver(parse_scenario(SCENARIO), targets)
        result = await driver.run()
    finally:
        await server.stop(0.5)

    assert result["shoppers"] > 10
    calls = result["calls"]
    assert calls["failed_other"] == 0, calls["other_errors"]
    assert calls["by_rpc"]["recommendation.Recommend"]["OK"] > 0
    assert live_ok(result) == []

    orders = result["orders"]
    assert orders["placed"] > 0
    done = orders["delivered_on_time"] + orders["delivered_late"] + orders["failed"]
    assert done + orders["not_accepted"] == orders["placed"]
    late_or_failed = orders["delivered_late"] + orders["failed"] + orders["not_accepted"]
    assert sum(orders["reasons"].values()) == late_or_failed
    # What the driver says was delivered is what dispatch recorded.
    delivered = {o for o, v in dispatch.orders.items() if v["state"] == 3}
    assert len(delivered) == orders["delivered_on_time"] + orders["delivered_late"]

    t = result["telemetry"]
    assert t["generated"] > 0
    assert t["stored"] == t["acknowledged"] == t["generated"]
    assert t["stored"] == sum(len(s) for s in telemetry.stored.values())

    # The catalogue was laid over the model's ids, so shown items have taste affinities.
    rec = result["recommendations"]
    assert rec["catalogue_items_aligned"] == 120
    assert rec["shown"] > 0 and rec["mean_affinity"] > 0
    assert set(recommendation.categories.values()) <= set(driver.world.catalogue.categories)


async def test_network_drops_are_counted_apart_and_telemetry_is_resent() -> None:
    # Radio-link failures every ~12 simulated seconds, 1-3 s each: longer than the deadline,
    # so calls that meet one are dropped.
    lossy = SCENARIO.replace("  deadline_s: 3\n", "  deadline_s: 0.8\n") + (
        "network:\n  profiles:\n"
        + "".join(
            f"    {radio}: {{rlf_per_hour: 300}}\n"
            for radio in ("5g-nsa", "wifi", "lte", "5g-sa", "5g-mmwave")
        )
    )
    server = aio.server()
    _, _, telemetry = add_all(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        target = f"127.0.0.1:{port}"
        result = await LiveDriver(
            parse_scenario(lossy), LiveTargets(target, target, target, target)
        ).run()
    finally:
        await server.stop(0.5)
    calls = result["calls"]
    assert calls["failed_by_network"] > 0
    assert calls["failed_other"] == 0, calls["other_errors"]
    t = result["telemetry"]
    assert t["batches_dropped_by_network"] > 0
    # Dropped batches were resent: everything generated is stored exactly once.
    assert t["stored"] == t["acknowledged"] == t["generated"]
    assert t["stored"] == sum(len(s) for s in telemetry.stored.values())
