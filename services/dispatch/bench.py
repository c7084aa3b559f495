"""``shoptwin bench dispatch-live``: SubmitOrder latency while the background re-optimisation
runs, and how much that re-optimisation improves on cheapest insertion.

The service runs in its own process (``shoptwin serve dispatch``), twice with the same seeded
load: background passes off (the baseline: latency and distance of cheapest insertion alone),
then on, back to back by default (the worst case for latency). Load is open-loop: calls leave
on a fixed schedule whether or not earlier ones have answered, so queueing shows in the
percentiles. First ``orders`` orders are submitted; then, for ``duration_s``, each tick submits
a new order and cancels the oldest open one, so ``orders`` stay open while passes run. The bare
echo RPC, measured in the same run, is the baseline of the machine.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from google.protobuf import duration_pb2

from services.dispatch import convert
from services.dispatch.problem import (
    DepotSpec,
    GeoPoint,
    OrderSpec,
    TimeWindow,
    VehicleSpec,
)
from services.runtime.bench import LatencyStats, render_table, summarize
from services.runtime.client import ChannelOptions, create_aio_channel
from services.runtime.process import ServiceProcess, free_port
from shoptwin.v1 import dispatch_pb2, dispatch_pb2_grpc

#: Westminster; orders fall in a 12 km square around it.
DEPOT = GeoPoint(51.5007, -0.1246)
SPAN_DEG = (0.108, 0.173)  # about 12 km north-south and east-west


@dataclass(frozen=True)
class LiveBenchConfig:
    orders: int = 100
    vehicles: int = 10
    duration_s: float = 20.0
    rate_per_s: float = 20.0
    reopt_time_limit_s: float = 1.0
    reopt_interval_s: float = 0.0
    solver_niceness: int = 10
    seed: int = 7


def make_fleet(config: LiveBenchConfig, now: float) -> tuple[DepotSpec, list[VehicleSpec]]:
    """A geo depot open 10 hours and ``vehicles`` vans of capacity 40 at 30 km/h."""
    depot = DepotSpec(DEPOT, TimeWindow(now - 600, now + 10 * 3600))
    vehicles = [VehicleSpec(f"van-{i + 1:03d}", 40) for i in range(config.vehicles)]
    return depot, vehicles


def make_order(rng: random.Random, index: int, now: float) -> OrderSpec:
    """A seeded order: 1-3 units, a 3-hour window starting within 5 hours, 2-5 min service."""
    start = now + rng.uniform(0, 5 * 3600)
    return OrderSpec(
        order_id=f"bench-{index:06d}",
        location=GeoPoint(
            DEPOT.latitude + rng.uniform(-SPAN_DEG[0] / 2, SPAN_DEG[0] / 2),
            DEPOT.longitude + rng.uniform(-SPAN_DEG[1] / 2, SPAN_DEG[1] / 2),
        ),
        demand=rng.randint(1, 3),
        window=TimeWindow(start, start + 3 * 3600),
        service_time=rng.uniform(120, 300),
    )


def order_message(spec: OrderSpec) -> dispatch_pb2.Order:
    assert spec.window is not None
    return dispatch_pb2.Order(
        order_id=spec.order_id,
        location=convert.location_message(spec.location),
        demand=spec.demand,
        window=convert.window_message(spec.window),
        service_time=duration_pb2.Duration(seconds=round(spec.service_time)),
    )


def fleet_message(
    depot: DepotSpec, vehicles: list[VehicleSpec]
) -> dispatch_pb2.ConfigureFleetRequest:
    return dispatch_pb2.ConfigureFleetRequest(
        depot=dispatch_pb2.Depot(
            location=convert.location_message(depot.location),
            hours=convert.window_message(depot.hours),
        ),
        vehicles=[
            dispatch_pb2.Vehicle(vehicle_id=v.vehicle_id, capacity=v.capacity) for v in vehicles
        ],
    )


async def _echo_baseline(duration_s: float) -> LatencyStats:
    from services.echo.bench import measure_echo, start_echo_process

    proc = start_echo_process()
    try:
        (stats,) = await measure_echo(proc.target, [1], duration_s=duration_s)
        return stats
    finally:
        proc.stop()


async def run_live_bench(config: LiveBenchConfig) -> dict[str, Any]:
    """Run the same seeded load twice against fresh service processes: background passes off
    (the baseline: latency and cost of cheapest insertion alone), then on."""
    runs = {}
    for background in (False, True):
        rng = random.Random(config.seed)
        with tempfile.TemporaryDirectory(prefix="shoptwin-dispatch-bench-") as data_dir:
            proc = ServiceProcess(
                "dispatch",
                free_port(),
                extra_args=[
                    "--metrics-port=0",
                    "--log-level=warning",
                    f"--data-dir={data_dir}",
                    "--telemetry-target=",
                    "--background-reopt" if background else "--no-background-reopt",
                    f"--reopt-time-limit-s={config.reopt_time_limit_s}",
                    f"--reopt-interval-s={config.reopt_interval_s}",
                    f"--solver-niceness={config.solver_niceness}",
                    f"--seed={config.seed}",
                ],
            )
            proc.start()
            try:
                proc.wait_serving(60)
                runs["with_passes" if background else "without_passes"] = await _drive(
                    proc.target, config, rng, settle=background
                )
            finally:
                proc.stop()
    echo = await _echo_baseline(3.0)
    with_passes, without = runs["with_passes"], runs["without_passes"]
    insertion_cost = without["plan_distance_m"]
    optimised_cost = with_passes["plan_distance_m"]
    return {
        "config": config.__dict__,
        "submit": with_passes["submit"],
        "cancel": with_passes["cancel"],
        "submit_without_passes": without["submit"],
        "background_passes_observed": with_passes["passes_observed"],
        "echo_baseline": echo.as_dict(),
        "submit_p99_over_echo_p99": round(with_passes["submit"]["p99_ms"] / echo.p99_ms, 1)
        if echo.p99_ms
        else None,
        "cost": {
            "open_orders": config.orders,
            "insertion_only_m": round(insertion_cost, 1),
            "after_background_m": round(optimised_cost, 1),
            "improvement_pct": round((1 - optimised_cost / insertion_cost) * 100, 2)
            if insertion_cost
            else None,
            "assigned_insertion_only": without["assigned"],
            "assigned_after_passes": with_passes["assigned"],
            "last_pass_before_m": round(with_passes["last_pass"][0], 1),
            "last_pass_after_m": round(with_passes["last_pass"][1], 1),
        },
    }


async def _drive(
    target: str, config: LiveBenchConfig, rng: random.Random, *, settle: bool
) -> dict[str, Any]:
    channel = create_aio_channel(target, ChannelOptions(retry=None, default_timeout_s=30.0))
    stub = dispatch_pb2_grpc.DispatchServiceStub(channel)
    try:
        now = time.time()
        depot, vehicles = make_fleet(config, now)
        await stub.ConfigureFleet(fleet_message(depot, vehicles))
        submit_latencies: list[float] = []
        cancel_latencies: list[float] = []
        errors = 0
        open_orders: list[OrderSpec] = []
        pass_costs: set[tuple[float, float]] = set()
        in_flight: set[asyncio.Task[None]] = set()

        async def submit(spec: OrderSpec) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                await stub.SubmitOrder(dispatch_pb2.SubmitOrderRequest(order=order_message(spec)))
            except Exception:
                errors += 1
                return
            submit_latencies.append(time.perf_counter() - t0)

        async def cancel(order_id: str) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                await stub.CancelOrder(dispatch_pb2.CancelOrderRequest(order_id=order_id))
            except Exception:
                errors += 1
                return
            cancel_latencies.append(time.perf_counter() - t0)

        def launch(coro: Any) -> None:
            task = asyncio.create_task(coro)
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

        async def watch_passes(stop: asyncio.Event) -> None:
            while not stop.is_set():
                plan = await stub.GetPlan(dispatch_pb2.GetPlanRequest())
                if plan.cost_before_last_pass:
                    pass_costs.add((plan.cost_before_last_pass, plan.cost_after_last_pass))
                await asyncio.sleep(0.25)

        stop_watch = asyncio.Event()
        watcher = asyncio.create_task(watch_passes(stop_watch))
        interval = 1.0 / config.rate_per_s
        started = time.perf_counter()
        next_at = started
        total_ticks = config.orders + int(config.duration_s * config.rate_per_s)
        for tick in range(total_ticks):
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += interval
            spec = make_order(rng, tick, now)
            open_orders.append(spec)
            launch(submit(spec))
            if tick >= config.orders:
                launch(cancel(open_orders.pop(0).order_id))
        elapsed = time.perf_counter() - started
        await asyncio.gather(*list(in_flight))
        stop_watch.set()
        await watcher
        if settle:
            # Let the passes finish on the final open orders.
            await asyncio.sleep(3 * config.reopt_time_limit_s + 1.0)
        plan = await stub.GetPlan(dispatch_pb2.GetPlanRequest())
    finally:
        await channel.close(None)
    return {
        "submit": summarize("SubmitOrder", 0, submit_latencies, errors, elapsed).as_dict(),
        "cancel": summarize("CancelOrder", 0, cancel_latencies, 0, elapsed).as_dict(),
        "passes_observed": len(pass_costs),
        "plan_distance_m": plan.total_distance,
        "assigned": sum(len(r.stops) for r in plan.routes),
        "last_pass": (plan.cost_before_last_pass, plan.cost_after_last_pass),
    }


def render_live_report(report: dict[str, Any]) -> str:
    """The latency table (with and without passes, echo baseline) and the cost lines."""
    rows = [
        {"rpc": "SubmitOrder, passes running", **report["submit"]},
        {"rpc": "CancelOrder, passes running", **report["cancel"]},
        {"rpc": "SubmitOrder, no passes", **report["submit_without_passes"]},
        {"rpc": "echo (baseline)", **report["echo_baseline"]},
    ]
    table = render_table(
        rows, ["rpc", "requests", "errors", "p50_ms", "p90_ms", "p99_ms", "max_ms"]
    )
    cost = report["cost"]
    return "\n".join(
        [
            table,
            f"SubmitOrder p99 / echo p99: {report['submit_p99_over_echo_p99']}x; background "
            f"passes observed during the load: {report['background_passes_observed']}",
            f"distance of the {cost['open_orders']} open orders: cheapest insertion alone "
            f"{cost['insertion_only_m']} m ({cost['assigned_insertion_only']} assigned), after "
            f"background passes {cost['after_background_m']} m "
            f"({cost['assigned_after_passes']} assigned): {cost['improvement_pct']} % lower",
        ]
    )
