"""Shoppers and their latent tastes: the ground truth recommendation quality is measured
against."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from simulator.behaviour.catalogue import Catalogue
from simulator.behaviour.geo import Point


@dataclass(frozen=True)
class ShopperConfig:
    """How shoppers differ."""

    #: Dirichlet concentration of category tastes; below 1 most shoppers have a few favourite
    #: categories.
    taste_concentration: float = 0.3
    #: Delivery addresses are spread uniformly over a disc of this radius around the depot.
    area_radius_m: float = 8000.0
    #: Share of shoppers on each radio type (keys are ``RadioType`` values).
    radio_mix: tuple[tuple[str, float], ...] = (
        ("wifi", 0.45),
        ("5g-nsa", 0.25),
        ("lte", 0.18),
        ("5g-sa", 0.07),
        ("5g-mmwave", 0.05),
    )
    #: Share of shoppers with an existing id the recommender has seen (the rest are new).
    returning_share: float = 0.6
    #: Ids of returning shoppers are drawn from this many known users.
    known_users: int = 5000


@dataclass(frozen=True)
class Shopper:
    """One shopper: id, tastes over categories (sums to 1), address and radio."""

    shopper_id: str
    tastes: np.ndarray
    location: Point
    radio: str
    returning: bool
    #: Cumulative tastes ending at exactly 1.0 (for drawing a category with one uniform number)
    #: and tastes times the number of categories (affinities), as plain floats for speed.
    taste_cdf: tuple[float, ...] = ()
    affinities: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.taste_cdf:
            object.__setattr__(self, "taste_cdf", cumulative(self.tastes))
        if not self.affinities:
            object.__setattr__(self, "affinities", tuple((self.tastes * self.tastes.size).tolist()))

    def draw_category(self, u: float) -> int:
        """The category at quantile ``u`` (0 <= u < 1) of this shopper's tastes."""
        return bisect.bisect_right(self.taste_cdf, u)

    def affinity(self, category_index: int) -> float:
        """Taste for a category relative to a uniform shopper (1 = indifferent)."""
        return self.affinities[category_index]

    def favourite_categories(self, n: int = 3) -> list[int]:
        """The ``n`` categories this shopper likes most, best first."""
        return [int(i) for i in np.argsort(-self.tastes)[:n]]


class ShopperFactory:
    """Draws shoppers for a catalogue and a config."""

    def __init__(
        self, catalogue: Catalogue, config: ShopperConfig | None = None, taste_seed: int = 0
    ) -> None:
        config = config or ShopperConfig()
        self.catalogue = catalogue
        self.config = config
        # Returning shoppers keep their tastes from session to session: one row per known user.
        self.known_tastes = np.random.default_rng(taste_seed).dirichlet(
            np.full(catalogue.n_categories, config.taste_concentration), size=config.known_users
        )
        self.known_cdfs = [cumulative(row) for row in self.known_tastes]
        self.known_affinities = [
            tuple(row) for row in (self.known_tastes * catalogue.n_categories).tolist()
        ]
        total = sum(w for _, w in config.radio_mix)
        if total <= 0:
            raise ValueError("radio_mix: weights must sum to more than 0")
        self._radios = [name for name, _ in config.radio_mix]
        self._radio_cdf = cumulative(np.asarray([w for _, w in config.radio_mix]))

    def make(self, rng: np.random.Generator, index: int) -> Shopper:
        """Shopper number ``index`` of a run (index makes new-shopper ids unique)."""
        cfg = self.config
        radius = cfg.area_radius_m * math.sqrt(rng.random())
        angle = rng.uniform(0.0, 2.0 * math.pi)
        returning = bool(rng.random() < cfg.returning_share)
        if returning:
            user = int(rng.integers(cfg.known_users))
            shopper_id = f"U{user:06d}"
            tastes = self.known_tastes[user]
            cdf = self.known_cdfs[user]
            affinities = self.known_affinities[user]
        else:
            shopper_id = f"new-{index:08d}"
            tastes = rng.dirichlet(np.full(self.catalogue.n_categories, cfg.taste_concentration))
            cdf = cumulative(tastes)
            affinities = tuple((tastes * tastes.size).tolist())
        return Shopper(
            shopper_id=shopper_id,
            tastes=tastes,
            location=Point(radius * math.cos(angle), radius * math.sin(angle)),
            radio=self._radios[bisect.bisect_right(self._radio_cdf, rng.random())],
            returning=returning,
            taste_cdf=cdf,
            affinities=affinities,
        )


def cumulative(weights: np.ndarray) -> tuple[float, ...]:
    """Normalised cumulative weights ending at exactly 1.0, so that ``bisect_right(cdf, u)``
    for ``0 <= u < 1`` is always a valid index."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    values = (cdf / cdf[-1]).tolist()
    values[-1] = 1.0
    return tuple(values)
