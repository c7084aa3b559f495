"""Item side information in training: descriptions for EASE (``description_similarity``) and
items' repurchase rates for the repeat term (``repurchase_rates``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.recommendation.features import DAY
from services.recommendation.model import BlendWeights, HistoryBatch, repeat_term
from services.recommendation.train import (
    IndexedLog,
    TrainConfig,
    description_similarity,
    fit_item_item,
    repurchase_rates,
)


def test_description_similarity_is_the_cosine_of_tf_idf_words() -> None:
    items = ["a", "b", "c", "d"]
    descriptions = {
        "a": "RED SPOT CERAMIC MUG",
        "b": "BLUE SPOT CERAMIC MUG",
        "c": "GARDEN CHAIR",
        # "d" has none.
    }
    sim = description_similarity(items, descriptions)
    assert sim is not None and sim.shape == (4, 4) and sim.dtype == torch.float64
    # Each described item is its own nearest neighbour (L2-normalised rows).
    assert torch.allclose(torch.diagonal(sim)[:3], torch.ones(3, dtype=torch.float64))
    # Three of four words shared: similar but not identical; no word shared: 0.
    assert 0.3 < float(sim[0, 1]) < 1.0
    assert float(sim[0, 2]) == 0.0
    assert torch.equal(sim, sim.T)
    # An item without a description is like no other.
    assert torch.count_nonzero(sim[3]) == 0


def test_description_similarity_needs_words_on_two_items() -> None:
    assert description_similarity(["a", "b"], {}) is None
    assert description_similarity(["a", "b"], {"a": "RED MUG"}) is None
    # Digits and one-letter tokens are not words.
    assert description_similarity(["a", "b"], {"a": "12 3", "b": "4 X"}) is None


def _log() -> IndexedLog:
    """Items 0 and 2 are bought together; item 1 (a colour variant of item 0 by its
    description) only ever alone, so the co-purchase matrix links it to nothing."""
    users = [0, 0, 1, 1, 2, 2, 3]
    items = [0, 2, 0, 2, 0, 2, 1]
    n = len(users)
    return IndexedLog(
        np.asarray(users, dtype=np.int64),
        np.asarray(items, dtype=np.int64),
        np.arange(n, dtype=np.float64),
        np.full(n, 4, dtype=np.int64),
        4,
        3,
    )


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_side_information_links_items_no_one_bought_together(weight: float) -> None:
    side = description_similarity(
        ["0", "1", "2"],
        {"0": "RED SPOT CERAMIC MUG", "1": "BLUE SPOT CERAMIC MUG", "2": "TEA TOWEL"},
    )
    assert side is not None
    plain = fit_item_item(_log(), TrainConfig(ease_lambda=1.0), side=side).dense
    linked = fit_item_item(
        _log(), TrainConfig(ease_lambda=1.0, side_weight=weight), side=side
    ).dense
    assert plain is not None and linked is not None
    # Plain EASE: item 0 says nothing about item 1; with the descriptions it points to it,
    # and the co-purchase link to item 2 stays the strongest.
    assert abs(float(plain[0, 1])) < 1e-6
    assert float(linked[0, 1]) > 0.01
    assert float(linked[0, 2]) > float(linked[0, 1])
    # Weight 0 (or no side information) is plain EASE exactly.
    again = fit_item_item(_log(), TrainConfig(ease_lambda=1.0, side_weight=0.0), side=side).dense
    assert again is not None and torch.equal(again, plain)


def test_repurchase_rates_count_buyers_who_came_back_on_another_day() -> None:
    # (user, item, day, event type): 4 is a purchase, 2 a click.
    rows = [
        (0, 0, 0, 4),
        (0, 0, 5, 4),  # user 0 buys item 0 again five days later: a repeater
        (1, 0, 2, 4),
        (1, 0, 2, 4),  # user 1 buys item 0 twice on one day: one order, not a repeat
        (2, 1, 3, 4),
        (2, 1, 4, 2),  # a click on another day is not a purchase
    ]
    users, items, days, types = (np.asarray(column) for column in zip(*rows, strict=True))
    log = IndexedLog(
        users.astype(np.int64),
        items.astype(np.int64),
        days * DAY + 3600.0,
        types.astype(np.int64),
        3,
        3,
    )
    rates = repurchase_rates(log)
    # (repeaters + 1) / (buyers + 2): item 0 has 1 of 2, item 1 0 of 1, item 2 no buyers.
    assert rates.dtype == np.float32
    assert np.allclose(rates, [2 / 4, 1 / 3, 1 / 2])


def test_repeat_term_weighs_items_by_their_repurchase_rate() -> None:
    now = 100 * DAY
    batch = HistoryBatch(
        1,
        np.zeros(2, dtype=np.int64),
        np.asarray([0, 1], dtype=np.int64),
        np.ones(2, dtype=np.float32),
        np.asarray([3.0, 3.0], dtype=np.float32),  # bought as often
        np.full(2, now),
    )
    rates = np.asarray([0.2, 0.8], dtype=np.float32)
    plain = repeat_term(BlendWeights(alpha=1.0, repeat_rate_power=0.0), batch, now, rates)
    assert plain.tolist() == [1.0, 1.0]
    weighted = repeat_term(BlendWeights(alpha=1.0, repeat_rate_power=1.0), batch, now, rates)
    # Scaled per row to alpha: the item its buyers come back for leads, by the rates' ratio.
    assert weighted.tolist() == pytest.approx([0.25, 1.0])
    # Models without rates (trained before them) keep the plain term.
    assert repeat_term(BlendWeights(repeat_rate_power=1.0), batch, now, None).tolist() == [
        1.0,
        1.0,
    ]
