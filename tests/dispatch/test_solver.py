"""The solver wrapper against hand-checked small instances."""

from __future__ import annotations

import math
from pathlib import Path

from services.dispatch.problem import (
    DepotSpec,
    GeoPoint,
    OrderSpec,
    PlanePoint,
    RoutingProblem,
    TimeWindow,
    UnassignedReason,
    VehicleSpec,
)
from services.dispatch.solomon import read_solomon, run_instance
from services.dispatch.solver import SolveOptions, solve_problem

FAST = SolveOptions(time_limit_s=0.3, seed=3)


def test_tiny_instance_matches_the_hand_checked_optimum(fixtures_dir: Path) -> None:
    # Capacity 20 fits two orders per vehicle. Orders 1 (0,10) and 2 (0,20) share a vehicle;
    # 2's window [0, 25] forces it before 1 (window [40, 60]): 20 + 10 + 10 = 40. Orders 3 and
    # 4 on the x axis: 10 + 10 + 20 = 40. Any mix of axes costs at least 68.3.
    result = solve_problem(read_solomon(fixtures_dir / "TINY4.txt").to_problem(), FAST)
    assert result.feasible
    assert not result.unassigned
    assert math.isclose(result.total_distance, 80.0, abs_tol=1e-9)
    routes = sorted(sorted_route for sorted_route in result.routes_by_vehicle().values())
    assert routes[0] == ["2", "1"]
    assert sorted(routes[1]) == ["3", "4"]
    by_order = {s.order_id: s for r in result.routes for s in r.stops}
    assert by_order["2"].service_start <= 25.0
    assert 40.0 <= by_order["1"].service_start <= 60.0
    # Arrival at 1 is 10 after leaving 2 (no service time); the vehicle then waits.
    assert math.isclose(by_order["1"].arrival, by_order["2"].departure + 10.0)
    assert by_order["2"].load_after == 10 and by_order["1"].load_after == 0


def test_c101_25_excerpt_reaches_the_published_optimum(fixtures_dir: Path) -> None:
    # Solomon C101 with its first 25 customers: optimum 191.3 (Kohl et al. 1999, one-decimal
    # distances); exact distances give 191.81 for the same routes.
    instance = read_solomon(fixtures_dir / "C101_25.txt")
    result = run_instance(instance, 191.3, SolveOptions(time_limit_s=1.0, seed=1))
    assert result.feasible
    assert result.cost < 191.3 * 1.005


def _line_problem(orders: list[OrderSpec], vehicles: int = 2, capacity: int = 10) -> RoutingProblem:
    return RoutingProblem(
        DepotSpec(PlanePoint(0, 0), TimeWindow(0, 100)),
        tuple(VehicleSpec(f"v{i}", capacity) for i in range(vehicles)),
        tuple(orders),
    )


def test_unservable_orders_come_back_with_their_reasons() -> None:
    problem = _line_problem(
        [
            OrderSpec("ok", PlanePoint(5, 0), 5),
            OrderSpec("heavy", PlanePoint(1, 0), 11),
            OrderSpec("far", PlanePoint(60, 0), 1),  # 120 to drive, the depot closes at 100
            OrderSpec("early", PlanePoint(0, 20), 1, TimeWindow(0, 10)),
        ]
    )
    result = solve_problem(problem, FAST)
    reasons = {u.order_id: u.reason for u in result.unassigned}
    assert reasons == {
        "heavy": UnassignedReason.DEMAND_EXCEEDS_CAPACITY,
        "far": UnassignedReason.TIME_WINDOW_UNREACHABLE,
        "early": UnassignedReason.TIME_WINDOW_UNREACHABLE,
    }
    assert result.routes_by_vehicle() == {result.routes[0].vehicle_id: ["ok"]}
    assert result.feasible


def test_orders_beyond_the_fleet_are_no_capacity_left_not_an_infeasible_plan() -> None:
    # Each vehicle carries 10; three orders of 6 fit only two vehicles' worth.
    problem = _line_problem([OrderSpec(f"o{i}", PlanePoint(i + 1, 0), 6) for i in range(3)])
    result = solve_problem(problem, FAST)
    assert result.feasible
    assert len(result.routes) == 2
    assert [u.reason for u in result.unassigned] == [UnassignedReason.NO_CAPACITY_LEFT]


def test_warm_start_from_the_optimum_keeps_it(fixtures_dir: Path) -> None:
    problem = read_solomon(fixtures_dir / "TINY4.txt").to_problem()
    initial = {"v1": ["2", "1"], "v2": ["3", "4"]}
    result = solve_problem(problem, SolveOptions(time_limit_s=0.05, seed=0), initial)
    assert math.isclose(result.total_distance, 80.0)
    assert result.routes_by_vehicle()["v1"] == ["2", "1"]


def test_geo_problem_uses_haversine_metres_and_vehicle_speed() -> None:
    depot = GeoPoint(51.5007, -0.1246)  # Westminster
    target = GeoPoint(51.5014, -0.1419)  # about 1.2 km west
    problem = RoutingProblem(
        DepotSpec(depot, TimeWindow(1_700_000_000, 1_700_036_000)),
        (VehicleSpec("van", 100, speed=10.0),),
        (OrderSpec("a", target, 1, service_time=60.0),),
    )
    result = solve_problem(problem, FAST)
    (route,) = result.routes
    assert 2300 < route.distance < 2500  # there and back
    stop = route.stops[0]
    assert math.isclose(stop.arrival - route.start_time, route.distance / 2 / 10.0, rel_tol=1e-6)
    assert math.isclose(route.return_time - stop.departure, route.distance / 2 / 10.0, rel_tol=1e-6)


def test_vehicle_start_and_shift_are_respected() -> None:
    problem = RoutingProblem(
        DepotSpec(PlanePoint(0, 0), TimeWindow(0, 1000)),
        (VehicleSpec("late", 10, shift=TimeWindow(500, 1000), start=PlanePoint(50, 0)),),
        (OrderSpec("a", PlanePoint(60, 0), 1, TimeWindow(0, 600)),),
    )
    result = solve_problem(problem, FAST)
    (route,) = result.routes
    assert route.start_time >= 500
    assert math.isclose(route.distance, 10 + 60)
    assert route.stops[0].arrival >= 510


def test_instant_windows_and_a_vehicle_free_after_its_shift_do_not_break_the_solver() -> None:
    problem = RoutingProblem(
        DepotSpec(PlanePoint(0, 0), TimeWindow(0, 100)),
        (
            VehicleSpec("on", 10),
            VehicleSpec("gone", 10, shift=TimeWindow(0, 50), available_from=60.0),
        ),
        (OrderSpec("instant", PlanePoint(3, 4), 1, TimeWindow(5.0004, 5.0004)),),
    )
    result = solve_problem(problem, FAST)
    assert result.routes_by_vehicle() == {"on": ["instant"]}
    assert result.routes[0].stops[0].service_start == 5.0004
