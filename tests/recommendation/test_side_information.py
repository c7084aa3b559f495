"""Item descriptions as side information for EASE (``description_similarity``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.recommendation.train import (
    IndexedLog,
    TrainConfig,
    description_similarity,
    fit_item_item,
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
