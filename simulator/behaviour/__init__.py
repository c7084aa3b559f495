"""The behaviour model of ShopTwin's world, without SimPy: who shops, what they do next, what
vans do and report. Seeded, typed, plain; the model mode, the live driver and the Locust users
all build on it. The names exported here are the stable API (docs/simulator.md)."""

from simulator.behaviour.arrivals import DAY_S, ArrivalProcess, DailyCurve, hourly_counts
from simulator.behaviour.catalogue import DEFAULT_CATEGORIES, Catalogue, CategorySpec, Item
from simulator.behaviour.fleet import (
    ColdChainConfig,
    FleetConfig,
    RoadConfig,
    StopOutcome,
    StopResult,
    TelemetryReading,
    VehicleModel,
    VehicleSpec,
    VehicleState,
    plan_wave,
    sweep_angle,
)
from simulator.behaviour.geo import GeoFrame, Point
from simulator.behaviour.orders import OrderConfig, OrderSpec, delivery_window, make_order
from simulator.behaviour.rng import BufferedGenerator
from simulator.behaviour.session import (
    Action,
    ActionKind,
    RecommendedItem,
    SessionConfig,
    SessionState,
    ShopperSessionModel,
    SimulatedRecommender,
)
from simulator.behaviour.shoppers import Shopper, ShopperConfig, ShopperFactory
from simulator.behaviour.utterances import Utterance, UtteranceBank
from simulator.behaviour.world import World, WorldConfig

__all__ = [
    "DAY_S",
    "DEFAULT_CATEGORIES",
    "Action",
    "ActionKind",
    "ArrivalProcess",
    "BufferedGenerator",
    "Catalogue",
    "CategorySpec",
    "ColdChainConfig",
    "DailyCurve",
    "FleetConfig",
    "GeoFrame",
    "Item",
    "OrderConfig",
    "OrderSpec",
    "Point",
    "RecommendedItem",
    "RoadConfig",
    "SessionConfig",
    "SessionState",
    "Shopper",
    "ShopperConfig",
    "ShopperFactory",
    "ShopperSessionModel",
    "SimulatedRecommender",
    "StopOutcome",
    "StopResult",
    "TelemetryReading",
    "Utterance",
    "UtteranceBank",
    "VehicleModel",
    "VehicleSpec",
    "VehicleState",
    "World",
    "WorldConfig",
    "delivery_window",
    "hourly_counts",
    "make_order",
    "plan_wave",
    "sweep_angle",
]
