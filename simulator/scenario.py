"""Scenarios: YAML files that set every knob of a run. Loading keeps line numbers, so a bad file
gets a message naming the file, the line and the key (``demo.yaml:12: fleet.vehicles: expected
an integer, got 'ten'``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from simulator.behaviour import (
    CategorySpec,
    DailyCurve,
    FleetConfig,
    OrderConfig,
    SessionConfig,
    ShopperConfig,
    WorldConfig,
)
from simulator.behaviour.geo import GeoFrame
from simulator.network import DEFAULT_PROFILES, NetworkConfig, RadioProfile, RadioType


class ScenarioError(ValueError):
    """A scenario file is wrong; the message names the file, line and key."""


@dataclass(frozen=True)
class ValidationCase:
    """One queue whose simulated mean time in system is compared with theory."""

    name: str
    #: ``mm1``, ``mmc`` or ``md1``.
    kind: str
    arrival_rate: float
    service_rate: float
    servers: int = 1


@dataclass(frozen=True)
class ValidationConfig:
    cases: tuple[ValidationCase, ...] = ()
    replications: int = 10
    customers: int = 100_000
    #: Customers discarded at the start of each replication (the queue starts empty).
    warmup: int = 5_000
    tolerance: float = 0.05


@dataclass(frozen=True)
class PlatformConfig:
    """Which calibration file the queueing model uses and any overrides of it."""

    #: ``default`` (shipped) or a path to a calibration JSON (relative to the scenario file).
    calibration: str = "default"
    #: Workers per service, overriding the calibration (e.g. ``{intent: 4}``).
    workers: Mapping[str, int] = field(default_factory=dict)
    #: Divides every service time (faster hardware, what-if runs).
    speedup: float = 1.0


@dataclass(frozen=True)
class ModelOptions:
    """Model mode."""

    #: Width of the time windows of the report's time series, seconds.
    window_s: float = 900.0
    #: Share of simulated recommendation slots drawn from true tastes.
    recommender_quality: float = 0.5
    #: Calls the network delays beyond this are dropped (the client's deadline), seconds.
    deadline_s: float = 2.0
    #: Minutes between dispatch waves; a wave plans the orders whose window starts within
    #: ``dispatch_horizon_min``.
    dispatch_interval_min: float = 10.0
    dispatch_horizon_min: float = 60.0


@dataclass(frozen=True)
class LiveOptions:
    """Live mode."""

    #: Simulated seconds per wall-clock second.
    speed: float = 60.0
    #: Simulated time to run, hours (arrivals stop then; vans finish their routes).
    duration_h: float = 1.0
    #: Deadline of each real call, seconds (wall clock).
    deadline_s: float = 5.0
    #: Upper bound of concurrent shopper sessions.
    max_sessions: int = 200
    #: Wall-clock seconds allowed for vans to finish and telemetry to drain at the end.
    drain_timeout_s: float = 120.0
    #: Simulated start time of day, hours (so a short demo runs at a busy hour).
    start_hour: float = 9.0


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario file."""

    name: str
    description: str = ""
    seed: int = 1
    #: Arrivals run for this many simulated hours from midnight.
    duration_h: float = 24.0
    #: After arrivals stop, vans keep going for this long (deliveries of late orders).
    drain_h: float = 14.0
    shoppers_per_day: float = 1000.0
    daily_curve: tuple[float, ...] = DailyCurve().hourly_weights
    catalogue_items: int = 2000
    categories: tuple[CategorySpec, ...] = ()
    shoppers: ShopperConfig = field(default_factory=ShopperConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    orders: OrderConfig = field(default_factory=OrderConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    frame: GeoFrame = field(default_factory=GeoFrame)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    platform: PlatformConfig = field(default_factory=PlatformConfig)
    model: ModelOptions = field(default_factory=ModelOptions)
    live: LiveOptions = field(default_factory=LiveOptions)
    validation: ValidationConfig | None = None
    #: Where it was loaded from (for relative paths and the run record).
    source: str = ""

    def world_config(self) -> WorldConfig:
        """The behaviour model's config of this scenario."""
        extra: dict[str, Any] = {}
        if self.categories:
            extra["categories"] = self.categories
        return WorldConfig(
            seed=self.seed,
            shoppers_per_day=self.shoppers_per_day,
            curve=DailyCurve(self.daily_curve),
            catalogue_items=self.catalogue_items,
            shoppers=self.shoppers,
            session=self.session,
            orders=self.orders,
            fleet=self.fleet,
            frame=self.frame,
            recommender_quality=self.model.recommender_quality,
            **extra,
        )

    def with_overrides(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **changes)


@dataclass
class _Source:
    """Line numbers of every key path of one file."""

    path: str
    lines: dict[str, int]

    def where(self, key_path: str) -> str:
        line = self.lines.get(key_path)
        while line is None and "." in key_path:
            key_path = key_path.rsplit(".", 1)[0]
            line = self.lines.get(key_path)
        return f"{self.path}:{line}" if line is not None else self.path

    def error(self, key_path: str, problem: str) -> ScenarioError:
        return ScenarioError(f"{self.where(key_path)}: {key_path}: {problem}")


def _compose(node: yaml.Node, key_path: str, lines: dict[str, int]) -> Any:
    """Plain Python values of a YAML node, recording the line of each key path."""
    lines.setdefault(key_path or "<root>", node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            sub = f"{key_path}.{key}" if key_path else key
            lines[sub] = key_node.start_mark.line + 1
            if key in out:
                raise ScenarioError(f"{key_node.start_mark.line + 1}: {sub}: duplicate key")
            out[key] = _compose(value_node, sub, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            sub = f"{key_path}[{i}]"
            lines[sub] = item.start_mark.line + 1
            items.append(_compose(item, sub, lines))
        return items
    return yaml.safe_load(yaml.serialize(node))


def _convert(value: Any, hint: Any, key_path: str, src: _Source) -> Any:
    """``value`` converted to the type ``hint``, or a ScenarioError naming key and line."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key_path, src)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, value, key_path, src)
    if hint is bool:
        if not isinstance(value, bool):
            raise src.error(key_path, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise src.error(key_path, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise src.error(key_path, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise src.error(key_path, f"expected a string, got {value!r}")
        return str(value)
    if hint is Path:
        return Path(str(value))
    if origin is tuple:
        element = args[0]
        if typing.get_origin(element) is tuple and isinstance(value, dict):
            # A mapping written for a tuple of (name, weight) pairs, e.g. radio_mix.
            return tuple(
                (str(k), _convert(v, typing.get_args(element)[1], f"{key_path}.{k}", src))
                for k, v in value.items()
            )
        if not isinstance(value, list | tuple):
            raise src.error(key_path, f"expected a list, got {value!r}")
        return tuple(_convert(v, element, f"{key_path}[{i}]", src) for i, v in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping) or hint is Mapping:
        if not isinstance(value, dict):
            raise src.error(key_path, f"expected a mapping, got {value!r}")
        value_hint = args[1] if args else Any
        return {str(k): _convert(v, value_hint, f"{key_path}.{k}", src) for k, v in value.items()}
    return value


def _build(cls: type, value: Any, key_path: str, src: _Source) -> Any:
    if not isinstance(value, dict):
        raise src.error(key_path, f"expected a mapping, got {value!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]
    kwargs: dict[str, Any] = {}
    for key, raw in value.items():
        sub = f"{key_path}.{key}" if key_path else key
        if key not in names:
            raise src.error(sub, f"unknown key; known keys: {', '.join(sorted(names))}")
        kwargs[key] = _convert(raw, hints[key], sub, src)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise src.error(key_path or "<root>", str(exc)) from None


def _network(value: Any, src: _Source) -> NetworkConfig:
    if not isinstance(value, dict):
        raise src.error("network", f"expected a mapping, got {value!r}")
    profiles: dict[RadioType, RadioProfile] = dict(DEFAULT_PROFILES)
    raw_profiles = value.get("profiles", {})
    if not isinstance(raw_profiles, dict):
        raise src.error("network.profiles", "expected a mapping of radio names")
    for radio_name, changes in raw_profiles.items():
        key = f"network.profiles.{radio_name}"
        try:
            radio = RadioType(radio_name)
        except ValueError:
            known = ", ".join(r.value for r in RadioType)
            raise src.error(key, f"unknown radio; known: {known}") from None
        base = dataclasses.asdict(profiles[radio])
        merged = _build(RadioProfile, {**base, **changes}, key, src)
        profiles[radio] = merged
    rest = {k: v for k, v in value.items() if k != "profiles"}
    plain = _build(NetworkConfig, rest, "network", src)
    return dataclasses.replace(plain, profiles=profiles)


def _check(scenario: Scenario, src: _Source) -> None:
    """Range checks that need more than a type."""
    checks: list[tuple[str, bool, str]] = [
        ("seed", scenario.seed >= 0, "must be >= 0"),
        ("duration_h", 0 < scenario.duration_h <= 24 * 7, "must be in (0, 168]"),
        ("drain_h", scenario.drain_h >= 0, "must be >= 0"),
        ("shoppers_per_day", scenario.shoppers_per_day >= 0, "must be >= 0"),
        ("daily_curve", len(scenario.daily_curve) == 24, "needs 24 hourly weights"),
        ("catalogue.items", scenario.catalogue_items >= 12, "must be >= 12"),
        ("fleet.vehicles", scenario.fleet.vehicles >= 1, "must be >= 1"),
        ("fleet.capacity", scenario.fleet.capacity >= 1, "must be >= 1"),
        ("fleet.telemetry_interval_s", scenario.fleet.telemetry_interval_s > 0, "must be > 0"),
        ("fleet.batch_readings", 1 <= scenario.fleet.batch_readings <= 5000, "must be 1..5000"),
        ("session.think_mean_s", scenario.session.think_mean_s > 0, "must be > 0"),
        ("model.window_s", scenario.model.window_s > 0, "must be > 0"),
        (
            "model.recommender_quality",
            0 <= scenario.model.recommender_quality <= 1,
            "must be in 0..1",
        ),
        ("live.speed", scenario.live.speed > 0, "must be > 0"),
        ("platform.speedup", scenario.platform.speedup > 0, "must be > 0"),
    ]
    for key, ok, problem in checks:
        if not ok:
            raise src.error(key, problem)
    radios = {r.value for r in RadioType}
    for i, (name, _) in enumerate(scenario.shoppers.radio_mix):
        if name not in radios:
            raise src.error(f"shoppers.radio_mix.{name}", f"unknown radio; known: {sorted(radios)}")
        del i
    if scenario.fleet.radio not in radios:
        raise src.error("fleet.radio", f"unknown radio; known: {sorted(radios)}")
    if scenario.validation is not None:
        for i, case in enumerate(scenario.validation.cases):
            key = f"validation.cases[{i}]"
            if case.kind not in ("mm1", "mmc", "md1"):
                raise src.error(f"{key}.kind", "must be mm1, mmc or md1")
            if case.servers < 1 or (case.kind != "mmc" and case.servers != 1):
                raise src.error(f"{key}.servers", "must be 1 for mm1/md1 and >= 1 for mmc")
            if case.arrival_rate >= case.servers * case.service_rate:
                raise src.error(f"{key}.arrival_rate", "must be below servers * service_rate")


def parse_scenario(text: str, source: str = "<string>") -> Scenario:
    """A scenario from YAML text; ``ScenarioError`` names the line and key of any problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else "?"
        raise ScenarioError(f"{source}:{line}: YAML syntax error: {exc.problem}") from None
    lines: dict[str, int] = {}
    src = _Source(source, lines)
    if root is None:
        raise ScenarioError(f"{source}: the file is empty")
    try:
        data = _compose(root, "", lines)
    except ScenarioError as exc:
        raise ScenarioError(f"{source}:{exc}") from None
    if not isinstance(data, dict):
        raise src.error("<root>", "expected a mapping of sections")
    if "name" not in data:
        raise ScenarioError(f"{source}:1: name: missing (every scenario has a name)")
    data = dict(data)
    special: dict[str, Any] = {}
    catalogue = data.pop("catalogue", None)
    if catalogue is not None:
        if not isinstance(catalogue, dict):
            raise src.error("catalogue", "expected a mapping")
        for key in catalogue:
            if key not in ("items", "categories"):
                raise src.error(f"catalogue.{key}", "unknown key; known keys: categories, items")
        if "items" in catalogue:
            special["catalogue_items"] = _convert(catalogue["items"], int, "catalogue.items", src)
        if "categories" in catalogue:
            special["categories"] = _convert(
                catalogue["categories"], tuple[CategorySpec, ...], "catalogue.categories", src
            )
    if "depot" in data:
        special["frame"] = _build(GeoFrame, data.pop("depot"), "depot", src)
    if "network" in data:
        special["network"] = _network(data.pop("network"), src)
    for key in list(data):
        if key in ("categories", "catalogue_items", "frame", "source"):
            raise src.error(key, "unknown key")
    scenario = _build(Scenario, data, "", src)
    scenario = dataclasses.replace(scenario, source=source, **special)
    _check(scenario, src)
    return scenario


def scenario_dir() -> Path:
    """The directory of the shipped scenarios."""
    return Path(str(resources.files("simulator").joinpath("scenarios")))


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in scenario_dir().glob("*.yaml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A shipped scenario by name (``demo``) or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = scenario_dir() / f"{name_or_path}.yaml"
        if not path.exists():
            raise ScenarioError(
                f"scenario: no scenario {name_or_path!r}; shipped: "
                f"{', '.join(shipped_scenarios())} (or give a path to a YAML file)"
            )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"scenario: cannot read {path}: {exc.strerror}") from None
    return parse_scenario(text, source=str(path))
