"""Declarative alert rules (YAML) and the engine that evaluates them on stored readings.

Rule kinds: ``temperature_out_of_range`` (outside [min_c, max_c] for ``for_s`` seconds),
``stationary_too_long`` (within ``radius_m`` of one spot for ``for_s`` seconds),
``device_silent`` (nothing received for ``after_s`` seconds, server clock) and
``geofence_exit`` (more than ``radius_m`` from ``center`` for ``for_s`` seconds). Each rule
holds at most one alert per device, which goes FIRING and later RESOLVED.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

import yaml

from services.runtime.settings import SettingsError
from services.telemetry.model import FLEET, LATITUDE, LONGITUDE, TEMPERATURE, TIME_MS, Row

DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")
EARTH_RADIUS_M = 6_371_008.8

TEMPERATURE_OUT_OF_RANGE = "temperature_out_of_range"
STATIONARY_TOO_LONG = "stationary_too_long"
DEVICE_SILENT = "device_silent"
GEOFENCE_EXIT = "geofence_exit"
KINDS = (TEMPERATURE_OUT_OF_RANGE, STATIONARY_TOO_LONG, DEVICE_SILENT, GEOFENCE_EXIT)

FIRING = "firing"
RESOLVED = "resolved"


def local_distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Flat-earth (equirectangular) distance in metres; exact enough below a few kilometres."""
    x = math.radians(lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    y = math.radians(lat2 - lat1)
    return EARTH_RADIUS_M * math.hypot(x, y)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass
class AlertEvent:
    """One alert as the engine reports it (a transition, or the current state in a list)."""

    alert_id: str
    rule_id: str
    kind: str
    state: str
    device_id: str
    fleet_id: str
    since_ms: int
    updated_ms: int
    value: float
    message: str


@dataclass
class Rule:
    """A parsed rule: its id, kind, scope and parameters, and the YAML it came from."""

    rule_id: str
    kind: str
    definition: str
    device_ids: frozenset[str] | None = None
    fleet_ids: frozenset[str] | None = None
    min_c: float = -math.inf
    max_c: float = math.inf
    for_ms: int = 0
    radius_m: float = 0.0
    after_ms: int = 0
    center: tuple[float, float] = (0.0, 0.0)
    #: (lat_lo, lat_hi, lon_lo, lon_hi) of a box surely inside a geofence circle.
    inner_box: tuple[float, float, float, float] = (0.0, -1.0, 0.0, -1.0)

    def applies(self, device_id: str, fleet_id: str) -> bool:
        if self.device_ids is not None and device_id not in self.device_ids:
            return False
        return self.fleet_ids is None or fleet_id in self.fleet_ids


def _number(rule_id: str, spec: dict[str, Any], key: str, *, low: float = -math.inf) -> float:
    if key not in spec:
        raise SettingsError(f"rules[{rule_id}].{key}: required")
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SettingsError(f"rules[{rule_id}].{key}: expected a finite number, got {value!r}")
    if value < low:
        raise SettingsError(f"rules[{rule_id}].{key}: must be at least {low:g}, got {value}")
    return float(value)


def _inner_box(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """A lat/lon box inside the circle (half-side r/sqrt(2), shrunk 1 % for the flat-earth
    approximation); empty near the poles, where it would not be one."""
    half_m = radius_m / math.sqrt(2) * 0.99
    cos_lat = math.cos(math.radians(min(89.0, abs(lat) + math.degrees(half_m / EARTH_RADIUS_M))))
    if abs(lat) > 80 or cos_lat <= 0:
        return (0.0, -1.0, 0.0, -1.0)
    dlat = math.degrees(half_m / EARTH_RADIUS_M)
    dlon = math.degrees(half_m / (EARTH_RADIUS_M * cos_lat))
    return (lat - dlat, lat + dlat, lon - dlon, lon + dlon)


def parse_rules(text: str, source: str = "rules") -> list[Rule]:
    """Parse a YAML rules document; errors name the rule and the key."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{source}: not valid YAML: {exc}") from None
    specs = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(specs, list):
        raise SettingsError(f"{source}: expected a top-level 'rules' list")
    rules: list[Rule] = []
    seen: set[str] = set()
    for position, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise SettingsError(f"{source}: rules[{position}] must be a mapping")
        rule_id = str(spec.get("id") or "")
        if not rule_id:
            raise SettingsError(f"{source}: rules[{position}].id: required")
        if rule_id in seen:
            raise SettingsError(f"{source}: rules[{rule_id}].id: duplicate")
        seen.add(rule_id)
        kind = spec.get("kind")
        if kind not in KINDS:
            raise SettingsError(f"rules[{rule_id}].kind: must be one of {', '.join(KINDS)}")
        rule = Rule(
            rule_id,
            kind,
            yaml.safe_dump(spec, sort_keys=False).strip(),
            device_ids=frozenset(map(str, spec["device_ids"])) if spec.get("device_ids") else None,
            fleet_ids=frozenset(map(str, spec["fleet_ids"])) if spec.get("fleet_ids") else None,
        )
        if kind == TEMPERATURE_OUT_OF_RANGE:
            rule.min_c = _number(rule_id, spec, "min_c")
            rule.max_c = _number(rule_id, spec, "max_c")
            if rule.max_c < rule.min_c:
                raise SettingsError(f"rules[{rule_id}].max_c: must not be below min_c")
            rule.for_ms = int(_number(rule_id, spec, "for_s", low=0) * 1000)
        elif kind == STATIONARY_TOO_LONG:
            rule.radius_m = _number(rule_id, spec, "radius_m", low=0)
            rule.for_ms = int(_number(rule_id, spec, "for_s", low=0) * 1000)
        elif kind == DEVICE_SILENT:
            rule.after_ms = int(_number(rule_id, spec, "after_s", low=0.001) * 1000)
        else:
            center = spec.get("center")
            if not isinstance(center, dict):
                raise SettingsError(f"rules[{rule_id}].center: expected latitude and longitude")
            lat = _number(rule_id, center, "latitude", low=-90)
            lon = _number(rule_id, center, "longitude", low=-180)
            if lat > 90 or lon > 180:
                raise SettingsError(f"rules[{rule_id}].center: out of range")
            rule.center = (lat, lon)
            rule.radius_m = _number(rule_id, spec, "radius_m", low=0)
            rule.inner_box = _inner_box(lat, lon, rule.radius_m)
            for_s = _number(rule_id, spec, "for_s", low=0) if "for_s" in spec else 0.0
            rule.for_ms = int(for_s * 1000)
        rules.append(rule)
    return rules


def load_rules(path: Path | None) -> list[Rule]:
    """The rules of ``path``, or the shipped defaults."""
    path = path or DEFAULT_RULES
    return parse_rules(path.read_text(encoding="utf-8"), str(path))


@dataclass
class _DeviceRuleState:
    last_ms: int = -1
    #: Start of the current breach (or of the current stationary spell); -1 when none.
    since_ms: int = -1
    anchor: tuple[float, float] | None = None
    alert: AlertEvent | None = None


@dataclass
class AlertEngine:
    """Evaluates rules on committed readings and the silence rule on a clock."""

    rules: list[Rule]
    emit: Callable[[list[AlertEvent]], None]
    _state: dict[tuple[str, str], _DeviceRuleState] = field(default_factory=dict)
    _last_seen_ms: dict[str, int] = field(default_factory=dict)
    _fleets: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # observe() runs on the alert thread, check_silence() and firing() on the event loop.
        self._lock = threading.Lock()
        self._row_rules = [r for r in self.rules if r.kind != DEVICE_SILENT]
        self._silence_rules = [r for r in self.rules if r.kind == DEVICE_SILENT]

    def firing(self) -> list[AlertEvent]:
        """Every alert firing now."""
        with self._lock:
            return [
                AlertEvent(**vars(s.alert))
                for s in self._state.values()
                if s.alert is not None and s.alert.state == FIRING
            ]

    def observe(self, rows: Iterable[Row], fleets: dict[str, str], received_ms: int) -> None:
        """Evaluate the reading rules on ``rows`` (stored just now, at ``received_ms`` on the
        server clock; one device's rows together, in arrival order) and resolve silence alerts
        of the devices that spoke."""
        with self._lock:
            events = self._observe(rows, fleets, received_ms)
        if events:
            self.emit(events)

    def _observe(
        self, rows: Iterable[Row], fleets: dict[str, str], received_ms: int
    ) -> list[AlertEvent]:
        self._fleets.update(fleets)
        events: list[AlertEvent] = []
        if self._row_rules:
            state = self._state
            for device_id, group in groupby(rows, key=itemgetter(0)):
                run = list(group)
                fleet_id = run[-1][FLEET] or self._fleets.get(device_id, "")
                # The run as columns (one C-level pass), for the fast paths.
                columns: list[tuple[Any, ...]] = list(zip(*run, strict=True))
                for rule in self._row_rules:
                    if not rule.applies(device_id, fleet_id):
                        continue
                    key = (rule.rule_id, device_id)
                    st = state.get(key)
                    if st is None:
                        st = state[key] = _DeviceRuleState()
                    if rule.kind == TEMPERATURE_OUT_OF_RANGE:
                        self._temperature(rule, st, run, columns, fleet_id, events)
                    elif rule.kind == GEOFENCE_EXIT:
                        self._geofence(rule, st, run, columns, fleet_id, events)
                    else:
                        self._stationary(rule, st, run, fleet_id, events)
        for device_id in fleets:
            self._last_seen_ms[device_id] = received_ms
            for rule in self._silence_rules:
                st = self._state.get((rule.rule_id, device_id))
                if st is not None and st.alert is not None and st.alert.state == FIRING:
                    resolved = self._resolve(st, received_ms, 0.0, "device spoke again")
                    if resolved is not None:
                        events.append(resolved)
        return events

    def check_silence(self, now_ms: int) -> None:
        """Fire ``device_silent`` alerts for devices quiet for longer than a rule allows."""
        with self._lock:
            events = self._check_silence(now_ms)
        if events:
            self.emit(events)

    def _check_silence(self, now_ms: int) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        for rule in self._silence_rules:
            for device_id, seen_ms in self._last_seen_ms.items():
                fleet_id = self._fleets.get(device_id, "")
                if not rule.applies(device_id, fleet_id):
                    continue
                silent_ms = now_ms - seen_ms
                key = (rule.rule_id, device_id)
                st = self._state.get(key)
                if st is None:
                    st = self._state[key] = _DeviceRuleState()
                firing = st.alert is not None and st.alert.state == FIRING
                if silent_ms >= rule.after_ms and not firing:
                    events.append(
                        self._fire(
                            rule,
                            st,
                            device_id,
                            fleet_id,
                            seen_ms,
                            now_ms,
                            silent_ms / 1000,
                            f"no reading for {silent_ms / 1000:.0f} s "
                            f"(limit {rule.after_ms / 1000:g} s)",
                        )
                    )
                elif firing and st.alert is not None:
                    st.alert.value = silent_ms / 1000
                    st.alert.updated_ms = now_ms
        return events

    def _temperature(
        self,
        rule: Rule,
        st: _DeviceRuleState,
        run: list[Row],
        columns: list[tuple[Any, ...]],
        fleet_id: str,
        out: list[AlertEvent],
    ) -> None:
        if st.since_ms < 0 and st.alert is None:
            # Fast path: nothing pending and every value in range leaves the state as it is.
            temps = columns[TEMPERATURE]
            if None in temps:
                temps = tuple(x for x in temps if x is not None)
                if not temps:
                    return
            if rule.min_c <= min(temps) and max(temps) <= rule.max_c:
                st.last_ms = max(st.last_ms, *columns[TIME_MS])
                return
        for row in run:
            temp = row[TEMPERATURE]
            t = row[TIME_MS]
            if temp is None or t < st.last_ms:
                continue  # a late arrival: the device's present is already known
            st.last_ms = t
            if rule.min_c <= temp <= rule.max_c:
                st.since_ms = -1
                event = self._resolve(st, t, temp, f"temperature back in range at {temp:.1f} C")
            else:
                event = self._breach(
                    rule,
                    st,
                    row,
                    fleet_id,
                    temp,
                    f"temperature {temp:.1f} C outside {rule.min_c:g}..{rule.max_c:g} C",
                )
            if event is not None:
                out.append(event)

    def _geofence(
        self,
        rule: Rule,
        st: _DeviceRuleState,
        run: list[Row],
        columns: list[tuple[Any, ...]],
        fleet_id: str,
        out: list[AlertEvent],
    ) -> None:
        lats, lons = columns[LATITUDE], columns[LONGITUDE]
        if None in lats:
            run = [r for r in run if r[LATITUDE] is not None]
            if not run:
                return
            lats = tuple(r[LATITUDE] for r in run)
            lons = tuple(r[LONGITUDE] for r in run)
        if st.since_ms < 0 and st.alert is None:
            # Fast path: every position inside the square inscribed in the circle.
            lat_lo, lat_hi, lon_lo, lon_hi = rule.inner_box
            if (
                lat_lo <= min(lats)
                and max(lats) <= lat_hi
                and lon_lo <= min(lons)
                and max(lons) <= lon_hi
            ):
                st.last_ms = max(st.last_ms, *columns[TIME_MS])
                return
        for row in run:
            t = row[TIME_MS]
            if t < st.last_ms:
                continue
            st.last_ms = t
            outside = distance_m(row[LATITUDE], row[LONGITUDE], *rule.center) - rule.radius_m  # type: ignore[arg-type]
            if outside <= 0:
                st.since_ms = -1
                event = self._resolve(st, t, 0.0, "back inside the geofence")
            else:
                event = self._breach(
                    rule, st, row, fleet_id, outside, f"{outside:.0f} m outside the geofence"
                )
            if event is not None:
                out.append(event)

    def _stationary(
        self, rule: Rule, st: _DeviceRuleState, run: list[Row], fleet_id: str, out: list[AlertEvent]
    ) -> None:
        radius = rule.radius_m
        # At tens of metres the flat-earth distance is exact enough and far cheaper than
        # haversine: compare squared degrees, longitude scaled by the anchor's cos(latitude).
        limit_deg2 = math.degrees(radius / EARTH_RADIUS_M) ** 2
        anchor = st.anchor
        cos_anchor = math.cos(math.radians(anchor[0])) if anchor is not None else 1.0
        for row in run:
            lat, lon, t = row[LATITUDE], row[LONGITUDE], row[TIME_MS]
            if lat is None or lon is None or t < st.last_ms:
                continue
            st.last_ms = t
            # The spell starts at the first reading of the spot (the anchor).
            if anchor is not None:
                dx = (lon - anchor[1]) * cos_anchor
                dy = lat - anchor[0]
            if anchor is None or dx * dx + dy * dy > limit_deg2:
                anchor = st.anchor = (lat, lon)
                cos_anchor = math.cos(math.radians(lat))
                st.since_ms = t
                if st.alert is not None:
                    event = self._resolve(st, t, 0.0, "moving again")
                    if event is not None:
                        out.append(event)
                continue
            if t - st.since_ms < rule.for_ms:
                continue
            stationary_s = (t - st.since_ms) / 1000
            if st.alert is not None and st.alert.state == FIRING:
                st.alert.value = stationary_s
                st.alert.updated_ms = t
                continue
            out.append(
                self._fire(
                    rule,
                    st,
                    row[0],
                    fleet_id,
                    st.since_ms,
                    t,
                    stationary_s,
                    f"within {radius:g} m for {stationary_s:.0f} s",
                )
            )

    def _breach(
        self, rule: Rule, st: _DeviceRuleState, row: Row, fleet_id: str, value: float, text: str
    ) -> AlertEvent | None:
        t = row[TIME_MS]
        if st.since_ms < 0:
            st.since_ms = t
        if st.alert is not None and st.alert.state == FIRING:
            st.alert.value = value
            st.alert.updated_ms = t
            return None
        if t - st.since_ms < rule.for_ms:
            return None
        return self._fire(rule, st, row[0], fleet_id, st.since_ms, t, value, text)

    @staticmethod
    def _fire(
        rule: Rule,
        st: _DeviceRuleState,
        device_id: str,
        fleet_id: str,
        since_ms: int,
        now_ms: int,
        value: float,
        text: str,
    ) -> AlertEvent:
        st.alert = AlertEvent(
            alert_id=f"{rule.rule_id}/{device_id}/{since_ms}",
            rule_id=rule.rule_id,
            kind=rule.kind,
            state=FIRING,
            device_id=device_id,
            fleet_id=fleet_id,
            since_ms=since_ms,
            updated_ms=now_ms,
            value=value,
            message=text,
        )
        return AlertEvent(**vars(st.alert))

    @staticmethod
    def _resolve(st: _DeviceRuleState, now_ms: int, value: float, text: str) -> AlertEvent | None:
        alert = st.alert
        if alert is None or alert.state != FIRING:
            return None
        st.alert = None
        return AlertEvent(
            alert_id=alert.alert_id,
            rule_id=alert.rule_id,
            kind=alert.kind,
            state=RESOLVED,
            device_id=alert.device_id,
            fleet_id=alert.fleet_id,
            since_ms=alert.since_ms,
            updated_ms=now_ms,
            value=value,
            message=text,
        )
