"""Solomon VRPTW instances: parser, conversion to a :class:`RoutingProblem`, and the benchmark.

Format: a name line, ``VEHICLE`` with ``NUMBER CAPACITY``, then ``CUSTOMER`` rows ``CUST NO.
XCOORD. YCOORD. DEMAND READY TIME DUE DATE SERVICE TIME``. Customer 0 is the depot, whose ready
time and due date bound every route; travel time equals Euclidean distance (speed 1). The vehicle
number is an upper bound on the fleet.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from services.dispatch.problem import (
    DepotSpec,
    OrderSpec,
    PlanePoint,
    RoutingProblem,
    TimeWindow,
    VehicleSpec,
)
from services.dispatch.solver import SolveOptions, solve_problem


class SolomonFormatError(ValueError):
    """The file is not a Solomon instance; the message names the line."""


@dataclass(frozen=True)
class Customer:
    number: int
    x: float
    y: float
    demand: int
    ready: float
    due: float
    service: float


@dataclass(frozen=True)
class SolomonInstance:
    name: str
    vehicles: int
    capacity: int
    #: customers[0] is the depot.
    customers: tuple[Customer, ...]

    def to_problem(self) -> RoutingProblem:
        """The instance as a routing problem: one vehicle id per available vehicle."""
        depot_row = self.customers[0]
        depot = DepotSpec(
            PlanePoint(depot_row.x, depot_row.y), TimeWindow(depot_row.ready, depot_row.due)
        )
        vehicles = tuple(
            VehicleSpec(f"v{i + 1}", self.capacity, speed=1.0) for i in range(self.vehicles)
        )
        orders = tuple(
            OrderSpec(
                order_id=str(c.number),
                location=PlanePoint(c.x, c.y),
                demand=c.demand,
                window=TimeWindow(c.ready, c.due),
                service_time=c.service,
            )
            for c in self.customers[1:]
        )
        return RoutingProblem(depot, vehicles, orders)


def parse_solomon(text: str, name: str | None = None) -> SolomonInstance:
    """Parse the text of a Solomon instance file."""
    lines = [line.strip() for line in text.splitlines()]
    nonempty = [(i + 1, line) for i, line in enumerate(lines) if line]
    if not nonempty:
        raise SolomonFormatError("empty file")
    instance_name = name or nonempty[0][1]
    vehicles = capacity = None
    customers: list[Customer] = []
    section = ""
    for lineno, line in nonempty[1:]:
        upper = line.upper()
        if upper.startswith("VEHICLE"):
            section = "vehicle"
            continue
        if upper.startswith("CUSTOMER"):
            section = "customer"
            continue
        if upper.startswith(("NUMBER", "CUST")):
            continue
        parts = line.split()
        try:
            if section == "vehicle" and vehicles is None:
                vehicles, capacity = int(parts[0]), int(parts[1])
            elif section == "customer":
                if len(parts) != 7:
                    raise ValueError(f"expected 7 columns, got {len(parts)}")
                number, x, y, demand, ready, due, service = (float(p) for p in parts)
                customers.append(Customer(int(number), x, y, int(demand), ready, due, service))
            else:
                raise ValueError("unexpected line")
        except (ValueError, IndexError) as exc:
            raise SolomonFormatError(f"line {lineno}: {exc}: {line!r}") from None
    if vehicles is None or capacity is None:
        raise SolomonFormatError("no VEHICLE section with NUMBER and CAPACITY")
    if len(customers) < 2:
        raise SolomonFormatError("needs the depot and at least one customer")
    if customers[0].number != 0:
        raise SolomonFormatError("the first customer row must be the depot (number 0)")
    return SolomonInstance(instance_name, vehicles, capacity, tuple(customers))


def read_solomon(path: Path) -> SolomonInstance:
    """Parse a Solomon instance file; the name is the file's stem."""
    return parse_solomon(path.read_text(encoding="utf-8"), name=path.stem)


def load_best_known(path: Path) -> dict[str, float]:
    """Best-known total distance per instance from the ``NAME_distance`` keys."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {
        key.removesuffix("_distance"): float(value["best_known_cost"])
        for key, value in raw.items()
        if key.endswith("_distance")
    }


@dataclass(frozen=True)
class InstanceResult:
    name: str
    cost: float
    best_known: float | None
    gap_pct: float | None
    vehicles: int
    unassigned: int
    seconds: float
    #: CPU seconds the search got: on a loaded machine far below ``seconds``.
    cpu_seconds: float
    feasible: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "instance": self.name,
            "cost": round(self.cost, 2),
            "bks": self.best_known,
            "gap_pct": None if self.gap_pct is None else round(self.gap_pct, 3),
            "vehicles": self.vehicles,
            "unassigned": self.unassigned,
            "time_s": round(self.seconds, 2),
            "cpu_s": round(self.cpu_seconds, 2),
            "feasible": self.feasible,
        }


def run_instance(
    instance: SolomonInstance, best_known: float | None, options: SolveOptions
) -> InstanceResult:
    """Solve one instance and compare its exact distance with the best known one.

    Feasible means every customer is served and every route respects capacity, windows and the
    depot's hours in exact arithmetic.
    """
    cpu_start = time.process_time()
    result = solve_problem(instance.to_problem(), options)
    cpu = time.process_time() - cpu_start
    cost = result.total_distance
    gap = None if not best_known else (cost - best_known) / best_known * 100.0
    return InstanceResult(
        name=instance.name,
        cost=cost,
        best_known=best_known,
        gap_pct=gap,
        vehicles=len(result.routes),
        unassigned=len(result.unassigned),
        seconds=result.solve_time_s,
        cpu_seconds=cpu,
        feasible=result.feasible and not result.unassigned,
    )
