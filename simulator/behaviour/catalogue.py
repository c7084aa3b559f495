"""The shop's catalogue: categories with price distributions, and items with popularity."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class CategorySpec:
    """One category: its share of the catalogue and its price distribution (lognormal)."""

    name: str
    #: Relative share of the catalogue's items.
    weight: float = 1.0
    #: Median unit price in minor units (pence).
    median_price_minor: int = 1500
    #: Spread of ln(price).
    price_sigma: float = 0.6


#: Categories in the spirit of the Online Retail data (a UK gift and homeware shop).
DEFAULT_CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec("kitchen", 1.4, 795, 0.6),
    CategorySpec("home-decor", 1.6, 1250, 0.7),
    CategorySpec("lighting", 0.8, 1950, 0.6),
    CategorySpec("garden", 0.7, 1495, 0.7),
    CategorySpec("stationery", 1.0, 295, 0.6),
    CategorySpec("bags", 0.9, 495, 0.5),
    CategorySpec("toys", 1.0, 650, 0.7),
    CategorySpec("party", 0.8, 165, 0.6),
    CategorySpec("christmas", 0.9, 425, 0.7),
    CategorySpec("jewellery", 0.6, 1295, 0.8),
    CategorySpec("textiles", 0.8, 995, 0.6),
    CategorySpec("gifts", 1.1, 850, 0.7),
)


@dataclass(frozen=True)
class Item:
    """One item of the catalogue."""

    item_id: str
    category: str
    category_index: int
    price_minor: int
    #: Relative popularity (Zipf-like), used when a shopper browses a category.
    popularity: float
    description: str


@dataclass(frozen=True)
class Catalogue:
    """Items grouped by category, with the per-category popularity tables sampling needs."""

    categories: tuple[str, ...]
    items: tuple[Item, ...]
    _by_category: tuple[np.ndarray, ...] = field(repr=False, compare=False)
    # Python lists: bisect on them is several times faster than numpy for one draw at a time.
    _item_lists: tuple[list[int], ...] = field(repr=False, compare=False)
    _popularity_cdf: tuple[list[float], ...] = field(repr=False, compare=False)
    _index_of: dict[str, int] = field(repr=False, compare=False)

    @classmethod
    def build(cls, categories: Sequence[str], items: Sequence[Item]) -> Catalogue:
        """A catalogue from explicit items (ids must be unique)."""
        by_category: list[list[int]] = [[] for _ in categories]
        for index, item in enumerate(items):
            by_category[item.category_index].append(index)
        arrays = tuple(np.asarray(ids, dtype=np.int64) for ids in by_category)
        cdfs = []
        for ids in arrays:
            weights = np.asarray([items[i].popularity for i in ids], dtype=np.float64)
            cdf = np.cumsum(weights)
            values = (cdf / cdf[-1]).tolist() if cdf.size else []
            if values:
                values[-1] = 1.0  # bisect of any u < 1 then lands on a valid index
            cdfs.append(values)
        return cls(
            tuple(categories),
            tuple(items),
            arrays,
            tuple(by_category),
            tuple(cdfs),
            {name: i for i, name in enumerate(categories)},
        )

    @classmethod
    def generate(
        cls,
        rng: np.random.Generator,
        n_items: int = 2000,
        categories: Sequence[CategorySpec] = DEFAULT_CATEGORIES,
        zipf_exponent: float = 1.0,
    ) -> Catalogue:
        """A random catalogue of ``n_items``: categories by weight, lognormal prices,
        Zipf popularity within each category. Every category gets at least one item."""
        if n_items < len(categories):
            raise ValueError(f"n_items: need at least one item per category ({len(categories)})")
        weights = np.asarray([c.weight for c in categories], dtype=np.float64)
        counts = np.ones(len(categories), dtype=np.int64)
        extra = rng.multinomial(n_items - len(categories), weights / weights.sum())
        counts += extra
        items: list[Item] = []
        for ci, (spec, count) in enumerate(zip(categories, counts, strict=True)):
            prices = rng.lognormal(np.log(spec.median_price_minor), spec.price_sigma, count)
            ranks = rng.permutation(count) + 1
            for j in range(int(count)):
                number = len(items)
                items.append(
                    Item(
                        item_id=f"SKU{number:06d}",
                        category=spec.name,
                        category_index=ci,
                        price_minor=max(1, round(float(prices[j]))),
                        popularity=float(1.0 / ranks[j] ** zipf_exponent),
                        description=f"{spec.name} item {number}",
                    )
                )
        return cls.build([c.name for c in categories], items)

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    def item_indices(self, category_index: int) -> np.ndarray:
        """Indices (into ``items``) of the items in one category."""
        return self._by_category[category_index]

    def sample_item(self, rng: np.random.Generator, category_index: int) -> Item:
        """An item of the category, drawn by popularity."""
        return self.item_for(category_index, float(rng.random()))

    def item_for(self, category_index: int, u: float) -> Item:
        """The item of the category at quantile ``u`` (0..1) of its popularity distribution."""
        position = bisect.bisect_right(self._popularity_cdf[category_index], u)
        return self.items[self._item_lists[category_index][position]]

    def category_index(self, name: str) -> int | None:
        """Index of a category name, or ``None`` when the catalogue has no such category."""
        return self._index_of.get(name)
