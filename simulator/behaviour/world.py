"""The whole behaviour model built from one config and one seed: what every consumer creates
first (``World.create(WorldConfig(...))``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simulator.behaviour.arrivals import ArrivalProcess, DailyCurve
from simulator.behaviour.catalogue import DEFAULT_CATEGORIES, Catalogue, CategorySpec
from simulator.behaviour.fleet import FleetConfig, VehicleModel
from simulator.behaviour.geo import GeoFrame
from simulator.behaviour.orders import OrderConfig
from simulator.behaviour.rng import BufferedGenerator
from simulator.behaviour.session import SessionConfig, ShopperSessionModel, SimulatedRecommender
from simulator.behaviour.shoppers import Shopper, ShopperConfig, ShopperFactory
from simulator.behaviour.utterances import UtteranceBank


@dataclass(frozen=True)
class WorldConfig:
    """Everything the behaviour model needs; a scenario file fills it."""

    seed: int = 1
    shoppers_per_day: float = 1000.0
    curve: DailyCurve = field(default_factory=DailyCurve)
    catalogue_items: int = 2000
    categories: tuple[CategorySpec, ...] = DEFAULT_CATEGORIES
    shoppers: ShopperConfig = field(default_factory=ShopperConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    orders: OrderConfig = field(default_factory=OrderConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    frame: GeoFrame = field(default_factory=GeoFrame)
    #: Model mode's simulated recommender: share of slots drawn from true tastes.
    recommender_quality: float = 0.5
    #: A CSV of utterances (text, intent, category); ``None`` is the shipped sample.
    utterances_path: Path | None = None


@dataclass
class World:
    """Catalogue, shoppers, sessions, arrivals and vans of one seeded run."""

    config: WorldConfig
    catalogue: Catalogue
    utterances: UtteranceBank
    shoppers: ShopperFactory
    sessions: ShopperSessionModel
    arrivals: ArrivalProcess
    vehicles: VehicleModel
    recommender: SimulatedRecommender

    @classmethod
    def create(cls, config: WorldConfig | None = None) -> World:
        """Build the world; the catalogue and tastes depend only on ``config.seed``."""
        config = config or WorldConfig()
        root = np.random.SeedSequence(config.seed)
        catalogue_seed, taste_seed = root.spawn(2)
        catalogue = Catalogue.generate(
            np.random.default_rng(catalogue_seed), config.catalogue_items, config.categories
        )
        utterances = UtteranceBank.load(config.utterances_path)
        return cls(
            config=config,
            catalogue=catalogue,
            utterances=utterances,
            shoppers=ShopperFactory(
                catalogue, config.shoppers, taste_seed=int(taste_seed.generate_state(1)[0])
            ),
            sessions=ShopperSessionModel(catalogue, utterances, config.session, config.orders),
            arrivals=ArrivalProcess(config.shoppers_per_day, config.curve),
            vehicles=VehicleModel(config.fleet, config.frame),
            recommender=SimulatedRecommender(catalogue, config.recommender_quality),
        )

    def rng(self, stream: str) -> np.random.Generator:
        """An independent generator for a named stream of this run ("arrivals", "sessions",
        "vehicles", "network", ...): the same seed and name give the same numbers."""
        key = [self.config.seed, *stream.encode("utf-8")]
        return BufferedGenerator(np.random.SeedSequence(key))

    def new_shopper(self, rng: np.random.Generator, index: int) -> Shopper:
        """Shopper number ``index``."""
        return self.shoppers.make(rng, index)
