"""Shoppers and their whole sessions drawn for a block of arrivals at once, with numpy.

``ShopperSessionModel.next_action`` draws one action at a time: right for the live driver and
Locust, which act on each answer, but in model mode the session's decisions do not depend on
the platform's answers (the recommender is simulated, failed calls do not change what a shopper
does next), so a block of sessions can be drawn up front: the same Markov chain, the same
probabilities, one numpy operation per step for all sessions still going instead of a dozen
Python calls per action. ``tests/simulator/test_behaviour.py`` checks that both give the same
statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.behaviour.geo import Point
from simulator.behaviour.orders import OrderSpec, delivery_window
from simulator.behaviour.session import ActionKind, ShopperSessionModel, SimulatedRecommender
from simulator.behaviour.shoppers import ShopperFactory

#: Action kinds as small integers (the order of ``ActionKind``).
KINDS: tuple[ActionKind, ...] = tuple(ActionKind)
BROWSE, RECOMMEND, CLICK, ADD_TO_CART, CHECKOUT, SUPPORT, LEAVE = range(len(KINDS))


@dataclass
class ShopperBlock:
    """``n`` shoppers: radio (index into the factory's radio names), returning or new, known
    user number (-1 for new), address, and tastes as cumulative rows and affinities."""

    first_index: int
    radio: np.ndarray
    user: np.ndarray
    x: np.ndarray
    y: np.ndarray
    taste_cdf: np.ndarray
    affinities: np.ndarray

    @property
    def n(self) -> int:
        return int(self.radio.size)

    def shopper_id(self, j: int) -> str:
        """The id of shopper ``j`` of the block (as ``ShopperFactory.make`` names it)."""
        user = int(self.user[j])
        return f"U{user:06d}" if user >= 0 else f"new-{self.first_index + j:08d}"


def draw_shoppers(
    factory: ShopperFactory, rng: np.random.Generator, first_index: int, n: int
) -> ShopperBlock:
    """``n`` shoppers numbered from ``first_index``, with ``ShopperFactory.make``'s
    distributions (uniform over the disc, the radio mix, returning share, Dirichlet tastes)."""
    cfg = factory.config
    radius = cfg.area_radius_m * np.sqrt(rng.random(n))
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    returning = rng.random(n) < cfg.returning_share
    user = np.where(returning, rng.integers(0, cfg.known_users, n), -1)
    categories = factory.catalogue.n_categories
    tastes = np.empty((n, categories))
    known = user >= 0
    tastes[known] = factory.known_tastes[user[known]]
    fresh = int((~known).sum())
    if fresh:
        tastes[~known] = rng.dirichlet(np.full(categories, cfg.taste_concentration), fresh)
    cdf = np.cumsum(tastes, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    radio_cdf = np.asarray(factory._radio_cdf)
    radio = np.minimum(np.searchsorted(radio_cdf, rng.random(n), side="right"), radio_cdf.size - 1)
    return ShopperBlock(
        first_index=first_index,
        radio=radio,
        user=user,
        x=radius * np.cos(angle),
        y=radius * np.sin(angle),
        taste_cdf=cdf,
        affinities=tastes * categories,
    )


@dataclass
class SessionBlock:
    """The sessions of a ``ShopperBlock``: every action in order, session by session.

    ``start[j]:start[j + 1]`` are the actions of session ``j``; per action its kind (index into
    ``KINDS``), think time before it, item (catalogue index, -1 for none), quantity, support
    intent (index, -1 for none). Per session: recommendations shown and clicked, items in the
    cart, the session clock at its last action (seconds after arrival), and the order placed
    (``None`` unless it ends in a checkout)."""

    start: np.ndarray
    kind: np.ndarray
    think: np.ndarray
    item: np.ndarray
    quantity: np.ndarray
    intent: np.ndarray
    shown: np.ndarray
    clicked: np.ndarray
    cart_lines: np.ndarray
    clock: np.ndarray
    cold_chain: np.ndarray

    def kind_counts(self, sessions: int | None = None) -> dict[ActionKind, int]:
        """Actions per kind of the first ``sessions`` sessions (all by default)."""
        end = int(self.start[-1] if sessions is None else self.start[sessions])
        counts = np.bincount(self.kind[:end], minlength=len(KINDS))
        return {KINDS[i]: int(c) for i, c in enumerate(counts) if c}


class SessionSampler:
    """Draws whole sessions for blocks of shoppers: ``ShopperSessionModel``'s chain, vectorised.

    Per step, for every session still going: a lognormal think time; after RECOMMEND a click on
    the first recommended item whose draw falls under ``click_base * decay**rank * affinity``
    (capped at 0.9); after BROWSE or CLICK an add-to-cart with probability ``add_to_cart_base *
    affinity`` (capped at 0.5); otherwise a free choice by the session weights (no leaving on
    the first step, leaving forced from ``max_steps``, support capped), and leaving with a cart
    checks out with ``checkout_probability``."""

    #: Buckets of the guide tables that find items by popularity quantile.
    GUIDE_BUCKETS = 1024

    def __init__(self, sessions: ShopperSessionModel, recommender: SimulatedRecommender) -> None:
        self.model = sessions
        self.recommender = recommender
        catalogue = sessions.catalogue
        self.n_categories = catalogue.n_categories
        items = catalogue.items
        self.item_category = np.asarray([i.category_index for i in items], dtype=np.int64)
        self.item_price = np.asarray([i.price_minor for i in items], dtype=np.int64)
        self.item_ids = [i.item_id for i in items]
        # All categories' popularity CDFs in one sorted array: category c's entries are
        # c + cdf, so one searchsorted of c + u finds the item of category c at quantile u.
        keys: list[float] = []
        order: list[int] = []
        ends: list[int] = []
        for c in range(self.n_categories):
            keys.extend(c + v for v in catalogue._popularity_cdf[c])
            order.extend(catalogue._item_lists[c])
            ends.append(len(order))
        self._keys = np.asarray(keys)
        self._order = np.asarray(order, dtype=np.int64)
        self._last = np.asarray(ends, dtype=np.int64) - 1
        # A guide table (Chen's method) per category: bucket b of GUIDE_BUCKETS holds the
        # first position above c + b / buckets, so a draw starts next to its answer and steps
        # forward at most a few times (a binary search over all keys costs far more).
        buckets = self.GUIDE_BUCKETS
        grid = np.arange(self.n_categories)[:, None] + np.arange(buckets)[None, :] / buckets
        self._guide = np.searchsorted(self._keys, grid, side="right")
        self._category_cdf = np.asarray(recommender._category_cdf)
        cfg = sessions.config
        self._choice_cdf = np.asarray(sessions._choice_cdf)
        self._first_cdf = np.asarray(sessions._first_cdf)
        self._intent_cdf = np.asarray(sessions._intent_cdf)
        self._intent_sizes = np.asarray(
            [len(sessions.utterances.by_intent[i]) for i in sessions._intents], dtype=np.int64
        )
        self.k = cfg.recommend_k
        self._click_p = np.asarray(
            [sessions._click_p[r] if r < len(sessions._click_p) else 0.0 for r in range(self.k)]
        )

    # -- pieces ---------------------------------------------------------------------------------

    def _items(self, categories: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Catalogue index of the item at quantile ``u`` of each category's popularity (the
        first position whose key is above ``c + u``, as a binary search would find)."""
        shape = categories.shape
        categories, u = categories.ravel(), u.ravel()
        target = categories + u
        last = self._last[categories]
        position = self._guide[categories, (u * self.GUIDE_BUCKETS).astype(np.int64)]
        np.minimum(position, last, out=position)
        behind = np.flatnonzero((self._keys[position] <= target) & (position < last))
        while behind.size:
            position[behind] += 1
            still = (self._keys[position[behind]] <= target[behind]) & (
                position[behind] < last[behind]
            )
            behind = behind[still]
        return self._order[position].reshape(shape)

    def _taste_categories(self, cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Category at quantile ``u`` of each row of cumulative tastes."""
        return np.minimum((cdf <= u[:, None]).sum(axis=1), self.n_categories - 1)

    def _recommend(
        self, rng: np.random.Generator, cdf: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``k`` items per row as ``SimulatedRecommender`` answers: each slot from the row's
        tastes with probability ``quality``, else by category size; then by popularity."""
        n, k = cdf.shape[0], self.k
        u = rng.random((3, n, k))
        from_taste = u[0] < self.recommender.quality
        # The category at each slot's quantile: how many of the row's cumulative tastes lie at
        # or below it, counted one category at a time (the same counts as summing an
        # (n, k, categories) array of comparisons, at ~60 % of its cost).
        by_taste = np.zeros((n, k), dtype=np.int64)
        for column in cdf.T:
            by_taste += column[:, None] <= u[1]
        np.minimum(by_taste, self.n_categories - 1, out=by_taste)
        by_size = np.minimum(
            np.searchsorted(self._category_cdf, u[1], side="right"), self.n_categories - 1
        )
        categories = np.where(from_taste, by_taste, by_size)
        return categories, self._items(categories, u[2])

    # -- sessions -------------------------------------------------------------------------------

    def draw(self, rng: np.random.Generator, shoppers: ShopperBlock) -> SessionBlock:
        """The sessions of ``shoppers``, each to its end (LEAVE or CHECKOUT)."""
        cfg = self.model.config
        n, k = shoppers.n, self.k
        cdf_all, aff_all = shoppers.taste_cdf, shoppers.affinities
        last = np.full(n, -1, dtype=np.int64)
        viewed = np.full(n, -1, dtype=np.int64)
        steps = np.zeros(n, dtype=np.int64)
        support = np.zeros(n, dtype=np.int64)
        cart = np.zeros(n, dtype=np.int64)
        shown = np.zeros(n, dtype=np.int64)
        clicked = np.zeros(n, dtype=np.int64)
        clock = np.zeros(n)
        cold = np.zeros(n, dtype=bool)
        pending_cat = np.zeros((n, k), dtype=np.int64)
        pending_item = np.zeros((n, k), dtype=np.int64)
        columns: list[tuple[np.ndarray, ...]] = []
        active = np.arange(n)
        mu, sigma = self.model._think_mu, cfg.think_sigma
        while active.size:
            m = active.size
            steps[active] += 1
            think = rng.lognormal(mu, sigma, m)
            clock[active] += think
            kind = np.full(m, -1, dtype=np.int64)
            item = np.full(m, -1, dtype=np.int64)
            quantity = np.zeros(m, dtype=np.int64)
            intent = np.full(m, -1, dtype=np.int64)
            before = last[active]
            # Reaction 1: click the first recommended item that catches the eye.
            reacting = np.flatnonzero(before == RECOMMEND)
            if reacting.size:
                rows = active[reacting]
                affinity = np.take_along_axis(aff_all[rows], pending_cat[rows], axis=1)
                p = np.minimum(0.9, self._click_p * affinity)
                hit = rng.random((rows.size, k)) < p
                any_hit = hit.any(axis=1)
                rank = hit.argmax(axis=1)
                sel = reacting[any_hit]
                chosen = pending_item[rows[any_hit], rank[any_hit]]
                kind[sel] = CLICK
                item[sel] = chosen
                viewed[active[sel]] = chosen
                clicked[active[sel]] += 1
            # Reaction 2: put the item just seen into the cart.
            reacting = np.flatnonzero(
                ((before == BROWSE) | (before == CLICK)) & (viewed[active] >= 0) & (kind < 0)
            )
            if reacting.size:
                rows = active[reacting]
                seen = viewed[rows]
                affinity = aff_all[rows, self.item_category[seen]]
                p = np.minimum(0.5, cfg.add_to_cart_base * affinity)
                add = rng.random(rows.size) < p
                sel = reacting[add]
                kind[sel] = ADD_TO_CART
                item[sel] = seen[add]
                quantity[sel] = rng.integers(1, cfg.max_quantity + 1, sel.size)
                viewed[active[sel]] = -1
                cart[active[sel]] += 1
            # Free choice for the rest.
            free = np.flatnonzero(kind < 0)
            if free.size:
                rows = active[free]
                u = rng.random(free.size)
                step = steps[rows]
                choice = np.where(
                    step >= cfg.max_steps,
                    3,
                    np.where(
                        step == 1,
                        np.searchsorted(self._first_cdf, u, side="right"),
                        np.searchsorted(self._choice_cdf, u, side="right"),
                    ),
                )
                choice = np.minimum(choice, 3)
                choice[(choice == 2) & (support[rows] >= cfg.max_support_messages)] = 0
                # Browse: a category (explore, or by taste), an item in it by popularity.
                sel = free[choice == 0]
                if sel.size:
                    r = active[sel]
                    explore = rng.random(sel.size) < cfg.explore_share
                    category = np.where(
                        explore,
                        rng.integers(0, self.n_categories, sel.size),
                        self._taste_categories(cdf_all[r], rng.random(sel.size)),
                    )
                    chosen = self._items(category, rng.random(sel.size))
                    kind[sel] = BROWSE
                    item[sel] = chosen
                    viewed[r] = chosen
                sel = free[choice == 1]
                if sel.size:
                    r = active[sel]
                    kind[sel] = RECOMMEND
                    pending_cat[r], pending_item[r] = self._recommend(rng, cdf_all[r])
                    shown[r] += k
                sel = free[choice == 2]
                if sel.size:
                    r = active[sel]
                    kind[sel] = SUPPORT
                    which = np.minimum(
                        np.searchsorted(self._intent_cdf, rng.random(sel.size), side="right"),
                        self._intent_cdf.size - 1,
                    )
                    intent[sel] = which
                    # The message itself: one of the intent's utterances.
                    item[sel] = (rng.random(sel.size) * self._intent_sizes[which]).astype(np.int64)
                    support[r] += 1
                sel = free[choice == 3]
                if sel.size:
                    r = active[sel]
                    buy = (cart[r] > 0) & (rng.random(sel.size) < cfg.checkout_probability)
                    kind[sel] = np.where(buy, CHECKOUT, LEAVE)
                    cold[r[buy]] = rng.random(int(buy.sum())) < self.model.orders.cold_chain_share
            last[active] = kind
            columns.append((active, kind, think, item, quantity, intent))
            done = (kind == LEAVE) | (kind == CHECKOUT)
            over = ~done & (steps[active] >= cfg.max_steps)
            steps[active[over]] = cfg.max_steps
            active = active[~done]
        session = np.concatenate([c[0] for c in columns])
        order = np.argsort(session, kind="stable")
        counts = np.bincount(session, minlength=n)
        start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=start[1:])
        return SessionBlock(
            start=start,
            kind=np.concatenate([c[1] for c in columns])[order],
            think=np.concatenate([c[2] for c in columns])[order],
            item=np.concatenate([c[3] for c in columns])[order],
            quantity=np.concatenate([c[4] for c in columns])[order],
            intent=np.concatenate([c[5] for c in columns])[order],
            shown=shown,
            clicked=clicked,
            cart_lines=cart,
            clock=clock,
            cold_chain=cold,
        )

    def orders(
        self, shoppers: ShopperBlock, sessions: SessionBlock, arrivals_s: np.ndarray
    ) -> dict[int, OrderSpec]:
        """The order of every session of the block that checks out, by session, as
        ``make_order`` builds it (placed at the session's own clock)."""
        config = self.model.orders
        out: dict[int, OrderSpec] = {}
        n = sessions.start.size - 1
        buyers = np.flatnonzero(sessions.kind[sessions.start[1:] - 1] == CHECKOUT)
        if not buyers.size:
            return out
        # The cart lines of every buyer at once: their ADD_TO_CART actions, in session order.
        session_of = np.repeat(np.arange(n), np.diff(sessions.start))
        is_buyer = np.zeros(n, dtype=bool)
        is_buyer[buyers] = True
        lines = np.flatnonzero((sessions.kind == ADD_TO_CART) & is_buyer[session_of])
        owner = session_of[lines]
        items = sessions.item[lines]
        quantities = sessions.quantity[lines]
        # Python floats: rounding a numpy scalar costs ~1 µs (the same integers either way).
        demand = np.bincount(owner, weights=quantities, minlength=n)[buyers].tolist()
        value = np.bincount(owner, weights=self.item_price[items] * quantities, minlength=n)[
            buyers
        ].tolist()
        counts = np.bincount(owner, minlength=n)[buyers].tolist()
        ids = [self.item_ids[i] for i in items.tolist()]
        placed = (arrivals_s[buyers] + sessions.clock[buyers]).tolist()
        x, y = shoppers.x[buyers].tolist(), shoppers.y[buyers].tolist()
        cold = sessions.cold_chain[buyers].tolist()
        offset = 0
        for b, j in enumerate(buyers.tolist()):
            window_start, window_end = delivery_window(config, placed[b])
            out[j] = OrderSpec(
                order_id=f"s{shoppers.first_index + j}-o",
                shopper_id=shoppers.shopper_id(j),
                location=Point(x[b], y[b]),
                demand=max(1, round(demand[b])),
                value_minor=round(value[b]),
                item_ids=tuple(ids[offset : offset + counts[b]]),
                placed_at_s=placed[b],
                window_start_s=window_start,
                window_end_s=window_end,
                service_time_s=config.service_time_s,
                cold_chain=cold[b],
            )
            offset += counts[b]
        return out
