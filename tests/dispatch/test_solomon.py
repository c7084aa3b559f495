"""The Solomon parser and the best-known-solution loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.dispatch.solomon import (
    SolomonFormatError,
    load_best_known,
    parse_solomon,
    read_solomon,
)


def test_parses_vehicles_capacity_depot_and_customers(fixtures_dir: Path) -> None:
    instance = read_solomon(fixtures_dir / "C101_25.txt")
    assert instance.name == "C101_25"
    assert (instance.vehicles, instance.capacity) == (25, 200)
    assert len(instance.customers) == 26
    depot, first = instance.customers[0], instance.customers[1]
    assert (depot.x, depot.y, depot.due) == (40, 50, 1236)
    assert (first.number, first.demand, first.ready, first.due, first.service) == (
        1,
        10,
        912,
        967,
        90,
    )
    problem = instance.to_problem()
    assert len(problem.vehicles) == 25 and len(problem.orders) == 25
    assert problem.depot.hours.end == 1236
    assert problem.orders[0].window is not None and problem.orders[0].window.start == 912


def test_rejects_malformed_files_naming_the_line() -> None:
    with pytest.raises(SolomonFormatError, match="line 8"):
        parse_solomon("X\n\nVEHICLE\nNUMBER CAPACITY\n 2 10\nCUSTOMER\nCUST NO.\n 0 0 0 0 0\n")
    with pytest.raises(SolomonFormatError, match="VEHICLE"):
        parse_solomon("X\nCUSTOMER\n0 0 0 0 0 10 0\n1 1 1 1 0 10 0\n")
    with pytest.raises(SolomonFormatError, match="depot"):
        parse_solomon("X\nVEHICLE\n2 10\nCUSTOMER\n1 0 0 0 0 10 0\n2 1 1 1 0 10 0\n")


def test_best_known_takes_the_distance_keys(tmp_path: Path) -> None:
    path = tmp_path / "bks.json"
    path.write_text(
        json.dumps(
            {
                "R101": {"best_known_cost": 1650.0},
                "R101_distance": {"best_known_cost": 1642.88},
            }
        )
    )
    assert load_best_known(path) == {"R101": 1642.88}
