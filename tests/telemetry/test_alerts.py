"""Each alert rule fires and resolves as declared; the rules file is validated by name."""

from __future__ import annotations

import pytest

from services.runtime.settings import SettingsError
from services.telemetry.alerts import (
    DEFAULT_RULES,
    FIRING,
    RESOLVED,
    AlertEngine,
    AlertEvent,
    distance_m,
    load_rules,
    parse_rules,
)
from services.telemetry.model import Row
from tests.telemetry.helpers import LONDON, row

T0 = 1_700_000_000_000


def engine(yaml_text: str) -> tuple[AlertEngine, list[AlertEvent]]:
    events: list[AlertEvent] = []
    return AlertEngine(parse_rules(yaml_text), events.extend), events


def feed(eng: AlertEngine, rows: list[Row], received_ms: int = T0) -> None:
    eng.observe(rows, {r[0]: r[3] for r in rows}, received_ms)


TEMPERATURE = """
rules:
  - id: cold
    kind: temperature_out_of_range
    min_c: 2
    max_c: 8
    for_s: 60
"""


def test_temperature_fires_only_after_the_duration_and_resolves() -> None:
    eng, events = engine(TEMPERATURE)
    # Out of range for 50 s: not yet.
    feed(eng, [row("box", i + 1, T0 + i * 10_000, temperature=9.5) for i in range(6)])
    assert events == []
    feed(eng, [row("box", 7, T0 + 60_000, temperature=10.0)])
    assert [(e.state, e.rule_id, e.device_id) for e in events] == [(FIRING, "cold", "box")]
    assert events[0].since_ms == T0 and events[0].value == 10.0
    assert [a.alert_id for a in eng.firing()] == [events[0].alert_id]
    feed(eng, [row("box", 8, T0 + 70_000, temperature=5.0)])
    assert [e.state for e in events] == [FIRING, RESOLVED]
    assert events[1].alert_id == events[0].alert_id
    assert eng.firing() == []


def test_temperature_excursion_shorter_than_the_duration_does_not_fire() -> None:
    eng, events = engine(TEMPERATURE)
    rows = [row("box", i + 1, T0 + i * 10_000, temperature=9.0) for i in range(5)]
    rows.append(row("box", 6, T0 + 50_000, temperature=5.0))
    rows += [row("box", 7 + i, T0 + 60_000 + i * 10_000, temperature=1.0) for i in range(5)]
    feed(eng, rows)
    assert events == []


def test_late_reading_does_not_flip_the_state() -> None:
    eng, events = engine(TEMPERATURE)
    feed(eng, [row("box", i + 1, T0 + i * 10_000, temperature=12.0) for i in range(8)])
    assert [e.state for e in events] == [FIRING]
    feed(eng, [row("box", 3, T0 + 20_000 - 1, temperature=5.0)])  # older than what we know
    assert [e.state for e in events] == [FIRING]


def test_stationary_too_long() -> None:
    eng, events = engine(
        """
rules:
  - id: parked
    kind: stationary_too_long
    radius_m: 30
    for_s: 600
"""
    )
    lat, lon = LONDON
    # Moving ~110 m a reading, then parked (jitter of a few metres) for 11 minutes.
    moving = [row("van", i + 1, T0 + i * 10_000, lat=lat + i * 0.001, lon=lon) for i in range(5)]
    parked = [
        row("van", 6 + i, T0 + 50_000 + i * 60_000, lat=lat + 0.005 + (i % 2) * 0.00005, lon=lon)
        for i in range(12)
    ]
    feed(eng, moving + parked)
    assert [(e.state, e.kind) for e in events] == [(FIRING, "stationary_too_long")]
    assert events[0].since_ms == T0 + 50_000
    assert events[0].value == pytest.approx(600.0)
    feed(eng, [row("van", 18, T0 + 50_000 + 12 * 60_000, lat=lat + 0.01, lon=lon)])
    assert [e.state for e in events] == [FIRING, RESOLVED]


def test_geofence_exit_fires_with_metres_outside_and_resolves() -> None:
    eng, events = engine(
        """
rules:
  - id: depot
    kind: geofence_exit
    center: {latitude: 51.5074, longitude: -0.1278}
    radius_m: 1000
"""
    )
    lat, lon = LONDON
    feed(eng, [row("van", 1, T0, lat=lat + 0.005, lon=lon)])  # ~556 m: inside
    assert events == []
    feed(eng, [row("van", 2, T0 + 1000, lat=lat + 0.018, lon=lon)])  # ~2 km: outside
    assert [e.state for e in events] == [FIRING]
    assert events[0].value == pytest.approx(distance_m(lat + 0.018, lon, lat, lon) - 1000)
    feed(eng, [row("van", 3, T0 + 2000, lat=lat, lon=lon)])
    assert [e.state for e in events] == [FIRING, RESOLVED]


def test_device_silent_fires_on_the_server_clock_and_resolves_when_it_speaks() -> None:
    eng, events = engine(
        """
rules:
  - id: silent
    kind: device_silent
    after_s: 300
"""
    )
    feed(eng, [row("a", 1), row("b", 1)], received_ms=T0)
    feed(eng, [row("b", 2)], received_ms=T0 + 200_000)
    eng.check_silence(T0 + 299_000)
    assert events == []
    eng.check_silence(T0 + 301_000)
    assert [(e.state, e.device_id) for e in events] == [(FIRING, "a")]
    eng.check_silence(T0 + 310_000)  # still silent: no second event
    assert len(events) == 1
    feed(eng, [row("a", 2)], received_ms=T0 + 320_000)
    assert [(e.state, e.device_id) for e in events] == [(FIRING, "a"), (RESOLVED, "a")]


def test_rules_scoped_to_a_fleet() -> None:
    eng, events = engine(
        """
rules:
  - id: cold
    kind: temperature_out_of_range
    min_c: 2
    max_c: 8
    for_s: 0
    fleet_ids: [cold-chain]
"""
    )
    feed(eng, [row("box", 1, T0, fleet_id="cold-chain", temperature=20.0)])
    feed(eng, [row("van", 1, T0, fleet_id="parcels", temperature=20.0)])
    assert [e.device_id for e in events] == ["box"]


def test_default_rules_load() -> None:
    rules = load_rules(None)
    assert DEFAULT_RULES.is_file()
    assert {r.kind for r in rules} == {
        "temperature_out_of_range",
        "stationary_too_long",
        "device_silent",
        "geofence_exit",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: 3", "'rules' list"),
        ("rules: [{kind: device_silent, after_s: 3}]", "rules[0].id"),
        ("rules: [{id: x, kind: nope}]", "rules[x].kind"),
        ("rules: [{id: x, kind: device_silent}]", "rules[x].after_s"),
        (
            "rules: [{id: x, kind: temperature_out_of_range, min_c: 9, max_c: 2, for_s: 1}]",
            "rules[x].max_c",
        ),
        ("rules: [{id: x, kind: geofence_exit, radius_m: 5}]", "rules[x].center"),
        (
            "rules: [{id: x, kind: device_silent, after_s: 1}, "
            "{id: x, kind: device_silent, after_s: 1}]",
            "duplicate",
        ),
    ],
)
def test_bad_rules_are_reported_by_name(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_rules(text)
