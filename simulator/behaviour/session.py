"""What a shopper does next: the session model every consumer (model mode, live driver, Locust)
draws from.

A session is a sequence of actions, each preceded by a think time. ``ShopperSessionModel.
next_action(rng, state)`` draws the next one and records it in ``state``; answers from the
platform come back through ``state.observe_recommendations``. Nothing here knows about SimPy,
gRPC or Locust.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

import numpy as np

from simulator.behaviour.catalogue import Catalogue, Item
from simulator.behaviour.orders import OrderConfig, OrderSpec, make_order
from simulator.behaviour.shoppers import Shopper, cumulative
from simulator.behaviour.utterances import Utterance, UtteranceBank


class ActionKind(StrEnum):
    """The things a shopper does. Each maps to platform calls (see docs/simulator.md)."""

    #: Open a category page and an item in it (item page: SimilarItems).
    BROWSE = "browse"
    #: Ask for personal recommendations (Recommend).
    RECOMMEND = "recommend"
    #: Click a recommended item (feedback CLICK).
    CLICK = "click"
    #: Put the item last seen into the cart (feedback ADD_TO_CART).
    ADD_TO_CART = "add_to_cart"
    #: Buy the cart (feedback PURCHASE per item, then SubmitOrder to dispatch).
    CHECKOUT = "checkout"
    #: Write to customer service (intent Classify).
    SUPPORT = "support"
    #: End the session without buying.
    LEAVE = "leave"


@dataclass(frozen=True)
class SessionConfig:
    """Probabilities and timings of a session (the scenario's ``session`` section)."""

    #: Relative weights of the free choices at each step.
    browse_weight: float = 0.45
    recommend_weight: float = 0.30
    support_weight: float = 0.03
    leave_weight: float = 0.22
    #: Click probability of a recommended item of a category with affinity 1 at rank 0; scaled
    #: by the shopper's affinity for its category and by ``click_rank_decay`` per rank.
    click_base: float = 0.03
    click_rank_decay: float = 0.85
    #: Probability of adding a viewed item to the cart at affinity 1 (scaled by affinity).
    add_to_cart_base: float = 0.025
    #: Probability of buying when leaving with a non-empty cart.
    checkout_probability: float = 0.4
    #: Share of browsing that ignores tastes (exploration).
    explore_share: float = 0.2
    #: Mean think time before each action, seconds (lognormal with ``think_sigma``).
    think_mean_s: float = 20.0
    think_sigma: float = 0.8
    max_steps: int = 30
    max_support_messages: int = 2
    recommend_k: int = 10
    max_quantity: int = 3
    #: Relative frequency of support intents; empty means uniform over the utterance bank.
    intent_weights: Mapping[str, float] = field(default_factory=dict)


class RecommendedItem(NamedTuple):
    """An item the platform recommended (``item`` is ``None`` when not in the catalogue)."""

    item_id: str
    category: str
    item: Item | None = None


@dataclass(frozen=True)
class Action:
    """One thing a shopper does, after ``think_s`` seconds of thinking."""

    kind: ActionKind
    think_s: float
    #: BROWSE: the item page opened; CLICK: the clicked item; ADD_TO_CART: the item.
    item: Item | RecommendedItem | None = None
    quantity: int = 1
    #: RECOMMEND: how many items to ask for.
    k: int = 0
    #: CLICK: rank of the clicked item in the last recommendation list.
    rank: int = -1
    #: SUPPORT: the message and its ground-truth intent.
    utterance: Utterance | None = None
    #: CHECKOUT: the order placed.
    order: OrderSpec | None = None
    #: CHECKOUT: the cart as (item, quantity).
    cart: tuple[tuple[Item, int], ...] = ()

    @property
    def item_id(self) -> str | None:
        return self.item.item_id if self.item is not None else None


@dataclass
class SessionState:
    """Where one shopper's session stands."""

    shopper: Shopper
    session_id: str
    started_s: float
    now_s: float = 0.0
    steps: int = 0
    cart: list[tuple[Item, int]] = field(default_factory=list)
    last: ActionKind | None = None
    viewed: Item | None = None
    pending_recommendations: list[RecommendedItem] = field(default_factory=list)
    recommendations_shown: int = 0
    recommendations_clicked: int = 0
    support_messages: int = 0
    order: OrderSpec | None = None
    done: bool = False

    def __post_init__(self) -> None:
        if self.now_s == 0.0:
            self.now_s = self.started_s

    def observe_recommendations(self, items: Sequence[RecommendedItem]) -> None:
        """Record the list the platform answered to the last RECOMMEND."""
        self.pending_recommendations = list(items)
        self.recommendations_shown += len(items)


class ShopperSessionModel:
    """Draws a shopper's next action from the session config, the catalogue, the shopper's
    tastes and the utterance bank."""

    def __init__(
        self,
        catalogue: Catalogue,
        utterances: UtteranceBank,
        config: SessionConfig | None = None,
        orders: OrderConfig | None = None,
    ) -> None:
        config = config or SessionConfig()
        self.catalogue = catalogue
        self.utterances = utterances
        self.config = config
        self.orders = orders or OrderConfig()
        weights = np.asarray(
            [
                config.browse_weight,
                config.recommend_weight,
                config.support_weight,
                config.leave_weight,
            ],
            dtype=np.float64,
        )
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("session weights: must be >= 0 and not all 0")
        self._choice_cdf = cumulative(weights)
        start = weights[:3]
        self._first_cdf = cumulative(start)
        intents = list(config.intent_weights) or list(utterances.intents)
        for intent in intents:
            if intent not in utterances.by_intent:
                raise ValueError(f"intent_weights: no utterances for intent {intent!r}")
        self._intents = intents
        iw = np.asarray([config.intent_weights.get(i, 1.0) for i in intents], dtype=np.float64)
        self._intent_cdf = cumulative(iw)
        self._click_p = [config.click_base * config.click_rank_decay**r for r in range(1000)]
        # Lognormal think time with the configured mean.
        self._think_mu = math.log(config.think_mean_s) - config.think_sigma**2 / 2

    def start(self, shopper: Shopper, session_id: str, now_s: float) -> SessionState:
        """A fresh session of ``shopper`` starting at ``now_s``."""
        return SessionState(shopper=shopper, session_id=session_id, started_s=now_s, now_s=now_s)

    def think_time(self, rng: np.random.Generator) -> float:
        """Seconds of thinking before an action."""
        return float(rng.lognormal(self._think_mu, self.config.think_sigma))

    def next_action(self, rng: np.random.Generator, state: SessionState) -> Action:
        """Draw the shopper's next action and record it in ``state`` (steps, cart, clock, end).

        After ``LEAVE`` or ``CHECKOUT`` the session is done and further calls return ``LEAVE``.
        """
        cfg = self.config
        if state.done:
            return Action(ActionKind.LEAVE, 0.0)
        think = self.think_time(rng)
        state.now_s += think
        state.steps += 1
        action = self._react(rng, state, think) or self._free_choice(rng, state, think)
        state.last = action.kind
        if action.kind in (ActionKind.LEAVE, ActionKind.CHECKOUT):
            state.done = True
        if state.steps >= cfg.max_steps and not state.done:
            # The next call ends the session.
            state.steps = cfg.max_steps
        return action

    def _react(self, rng: np.random.Generator, state: SessionState, think: float) -> Action | None:
        """Actions that follow from the previous one: click a recommendation, add to cart."""
        cfg = self.config
        shopper = state.shopper
        if state.last is ActionKind.RECOMMEND and state.pending_recommendations:
            pending, state.pending_recommendations = state.pending_recommendations, []
            affinities = shopper.affinities
            index_of = self.catalogue.category_index
            draws = rng.random(len(pending)).tolist()
            for rank, rec in enumerate(pending):
                index = index_of(rec.category)
                affinity = affinities[index] if index is not None else 1.0
                p = self._click_p[rank] * affinity if rank < len(self._click_p) else 0.0
                if draws[rank] < min(0.9, p):
                    state.recommendations_clicked += 1
                    state.viewed = rec.item
                    return Action(ActionKind.CLICK, think, item=rec, rank=rank)
        if state.last in (ActionKind.BROWSE, ActionKind.CLICK) and state.viewed is not None:
            item = state.viewed
            p = min(0.5, cfg.add_to_cart_base * shopper.affinity(item.category_index))
            if rng.random() < p:
                quantity = int(rng.integers(1, cfg.max_quantity + 1))
                state.cart.append((item, quantity))
                state.viewed = None
                return Action(ActionKind.ADD_TO_CART, think, item=item, quantity=quantity)
        return None

    def _free_choice(self, rng: np.random.Generator, state: SessionState, think: float) -> Action:
        cfg = self.config
        if state.steps >= cfg.max_steps:
            choice = 3
        elif state.steps == 1:
            choice = bisect.bisect_right(self._first_cdf, rng.random())
        else:
            choice = bisect.bisect_right(self._choice_cdf, rng.random())
        if choice == 2 and state.support_messages >= cfg.max_support_messages:
            choice = 0
        if choice == 0:
            if rng.random() < cfg.explore_share:
                category = int(rng.integers(self.catalogue.n_categories))
            else:
                category = state.shopper.draw_category(float(rng.random()))
            item = self.catalogue.sample_item(rng, category)
            state.viewed = item
            return Action(ActionKind.BROWSE, think, item=item)
        if choice == 1:
            return Action(ActionKind.RECOMMEND, think, k=cfg.recommend_k)
        if choice == 2:
            state.support_messages += 1
            intent = self._intents[bisect.bisect_right(self._intent_cdf, rng.random())]
            return Action(ActionKind.SUPPORT, think, utterance=self.utterances.sample(rng, intent))
        if state.cart and rng.random() < cfg.checkout_probability:
            order = make_order(
                rng,
                self.orders,
                order_id=f"{state.session_id}-o",
                shopper_id=state.shopper.shopper_id,
                location=state.shopper.location,
                cart=state.cart,
                placed_at_s=state.now_s,
            )
            state.order = order
            return Action(ActionKind.CHECKOUT, think, order=order, cart=tuple(state.cart))
        return Action(ActionKind.LEAVE, think)


class SimulatedRecommender:
    """Model mode's stand-in for the recommendation service's answers: each slot comes from the
    shopper's true tastes with probability ``quality``, else from overall popularity. Lets model
    mode report click-through for a recommender of a given quality."""

    def __init__(self, catalogue: Catalogue, quality: float = 0.5) -> None:
        if not 0.0 <= quality <= 1.0:
            raise ValueError("quality: must be in 0..1")
        self.catalogue = catalogue
        self.quality = quality
        sizes = np.asarray([catalogue.item_indices(c).size for c in range(catalogue.n_categories)])
        self._category_cdf = cumulative(sizes)

    def recommend(
        self, rng: np.random.Generator, shopper: Shopper, k: int
    ) -> list[RecommendedItem]:
        """``k`` recommended items for ``shopper``."""
        out = []
        quality = self.quality
        item_for = self.catalogue.item_for
        taste_cdf = shopper.taste_cdf
        category_cdf = self._category_cdf
        bisect_right = bisect.bisect_right
        # One array draw for the whole list: far cheaper than 3k scalar draws.
        draws = rng.random(3 * k).tolist()
        for i in range(0, 3 * k, 3):
            cdf = taste_cdf if draws[i] < quality else category_cdf
            item = item_for(bisect_right(cdf, draws[i + 1]), draws[i + 2])
            out.append(RecommendedItem(item.item_id, item.category, item))
        return out
