"""Per-reading validation names the field at fault; valid readings round-trip."""

from __future__ import annotations

import math

import pytest

from services.telemetry.codec import decode_batch, row_to_reading
from services.telemetry.model import MAX_FUTURE_MS
from shoptwin.v1 import telemetry_pb2
from tests.telemetry.helpers import NOW_S, reading

NOW_MS = NOW_S * 1000


def test_valid_readings_round_trip() -> None:
    r = reading("van-1", 7, fleet_id="f", temperature=4.5, speed_mps=3.0, door_open=True)
    rows, indices, rejections = decode_batch([r], NOW_MS, MAX_FUTURE_MS)
    assert indices is None and rejections == []
    assert row_to_reading(rows[0]) == r


def test_absent_optional_fields_stay_absent() -> None:
    r = telemetry_pb2.Reading(device_id="box", sequence=1)
    r.time.seconds = NOW_S
    rows, _, rejections = decode_batch([r], NOW_MS, MAX_FUTURE_MS)
    assert rejections == []
    back = row_to_reading(rows[0])
    assert not back.HasField("position")
    assert not back.HasField("temperature_c")
    assert not back.HasField("door_open")


def _bad(mutate: str) -> telemetry_pb2.Reading:
    r = reading("van-1", 1, temperature=4.0)
    if mutate == "nan_latitude":
        r.position.latitude = math.nan
    elif mutate == "longitude":
        r.position.longitude = 181.0
    elif mutate == "future":
        r.time.seconds = NOW_S + 301
    elif mutate == "no_time":
        r.ClearField("time")
    elif mutate == "empty_device":
        r.device_id = ""
    elif mutate == "long_device":
        r.device_id = "x" * 129
    elif mutate == "control_char":
        r.device_id = "van\n1"
    elif mutate == "sequence":
        r.sequence = 0
    elif mutate == "temperature":
        r.temperature_c = math.inf
    elif mutate == "speed":
        r.speed_mps = -1.0
    elif mutate == "heading":
        r.heading_deg = 361.0
    elif mutate == "battery":
        r.battery_pct = math.nan
    return r


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        ("nan_latitude", "readings[1].position.latitude", "finite"),
        ("longitude", "readings[1].position.longitude", "-180..180"),
        ("future", "readings[1].time", "future"),
        ("no_time", "readings[1].time", "required"),
        ("empty_device", "readings[1].device_id", "empty"),
        ("long_device", "readings[1].device_id", "128"),
        ("control_char", "readings[1].device_id", "control"),
        ("sequence", "readings[1].sequence", "at least 1"),
        ("temperature", "readings[1].temperature_c", "-100..150"),
        ("speed", "readings[1].speed_mps", "0..100"),
        ("heading", "readings[1].heading_deg", "0..360"),
        ("battery", "readings[1].battery_pct", "finite"),
    ],
)
def test_bad_reading_is_rejected_by_field_and_the_others_kept(
    mutate: str, field: str, words: str
) -> None:
    readings = [reading("van-1", 1), _bad(mutate), reading("van-1", 3)]
    rows, indices, rejections = decode_batch(readings, NOW_MS, MAX_FUTURE_MS)
    assert [(r.index, r.field) for r in rejections] == [(1, field)]
    assert words in rejections[0].reason
    assert indices == [0, 2]
    assert [r[1] for r in rows] == [1, 3]


def test_time_slightly_in_the_future_is_accepted() -> None:
    r = reading("van-1", 1, seconds=NOW_S + 299)
    _, _, rejections = decode_batch([r], NOW_MS, MAX_FUTURE_MS)
    assert rejections == []


def test_zero_values_that_were_set_stay_set() -> None:
    r = reading("van-1", 1, lat=0.0, lon=0.0, temperature=0.0, speed_mps=0.0, door_open=False)
    rows, _, rejections = decode_batch([r], NOW_MS, MAX_FUTURE_MS)
    assert rejections == []
    back = row_to_reading(rows[0])
    assert back == r
    assert back.HasField("position") and back.HasField("door_open")
    assert back.HasField("speed_mps") and back.HasField("temperature_c")
