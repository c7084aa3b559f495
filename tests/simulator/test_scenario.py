"""Scenario files: the shipped ones load; bad ones get a message naming the key and the line."""

from __future__ import annotations

import pytest

from simulator.scenario import ScenarioError, load_scenario, parse_scenario, shipped_scenarios


def test_shipped_scenarios_load() -> None:
    assert {"demo", "black-friday", "fleet-growth", "mmc"} <= set(shipped_scenarios())
    for name in shipped_scenarios():
        scenario = load_scenario(name)
        assert scenario.name == name
    assert load_scenario("black-friday").shoppers_per_day == 1_000_000
    assert load_scenario("mmc").validation is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nfleet:\n  vehicles: ten\n", "bad.yaml:3: fleet.vehicles: expected an integer"),
        ("name: x\nfleet:\n  vehicle: 3\n", "bad.yaml:3: fleet.vehicle: unknown key"),
        ("name: x\n\nseed: -1\n", "bad.yaml:3: seed: must be >= 0"),
        ("name: x\nsession:\n  think_mean_s: 0\n", "bad.yaml:3: session.think_mean_s: must be > 0"),
        (
            "name: x\nnetwork:\n  profiles:\n    lte:\n      base_rtt_ms: fast\n",
            "bad.yaml:5: network.profiles.lte.base_rtt_ms: expected a number",
        ),
        (
            "name: x\nnetwork:\n  profiles:\n    6g: {base_rtt_ms: 1}\n",
            "bad.yaml:4: network.profiles.6g: unknown radio",
        ),
        (
            "name: x\nshoppers:\n  radio_mix: {wifi: 1, carrier-pigeon: 1}\n",
            "bad.yaml:3: shoppers.radio_mix.carrier-pigeon: unknown radio",
        ),
        ("name: x\ndaily_curve: [1, 2]\n", "bad.yaml:2: daily_curve: needs 24 hourly weights"),
        ("name: x\nfleet: [\n", "bad.yaml:3: YAML syntax error"),
        ("seed: 1\n", "bad.yaml:1: name: missing"),
        ("name: x\nseed: 1\nseed: 2\n", "bad.yaml:3: seed: duplicate key"),
        (
            "name: x\nvalidation:\n  cases:\n    - {name: a, kind: mm1, arrival_rate: 12, "
            "service_rate: 10}\n",
            "bad.yaml:4: validation.cases[0].arrival_rate: must be below",
        ),
        ("name: x\ncatalogue:\n  size: 3\n", "bad.yaml:3: catalogue.size: unknown key"),
    ],
)
def test_bad_scenarios_name_key_and_line(text: str, expected: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="bad.yaml")
    assert str(info.value).startswith(expected), str(info.value)


def test_unknown_scenario_lists_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match=r"shipped: .*demo"):
        load_scenario("no-such-scenario")


def test_overrides_reach_the_behaviour_model() -> None:
    scenario = parse_scenario(
        "name: x\nseed: 5\nshoppers_per_day: 123\ncatalogue: {items: 50}\n"
        "fleet: {vehicles: 3, radio: lte}\nnetwork: {profiles: {lte: {base_rtt_ms: 99}}}\n"
    )
    world = scenario.world_config()
    assert world.seed == 5 and world.shoppers_per_day == 123 and world.catalogue_items == 50
    assert world.fleet.vehicles == 3
    from simulator.network import RadioType

    assert scenario.network.profiles[RadioType.LTE].base_rtt_ms == 99
    # Other fields of the profile keep their measured defaults.
    assert scenario.network.profiles[RadioType.LTE].ms_per_1000km == 27.5
