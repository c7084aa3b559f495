"""Ranking metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from services.recommendation.metrics import (
    MetricAccumulator,
    dense_recall_ndcg,
    ndcg_at_k,
    recall_at_k,
)


def test_recall_counts_hits_over_min_of_k_and_targets() -> None:
    assert recall_at_k([1, 2, 3, 4], {2, 9}, 3) == pytest.approx(1 / 2)
    # More targets than K: a full list of hits is a perfect score.
    assert recall_at_k([1, 2], {1, 2, 3, 4}, 2) == 1.0
    assert recall_at_k([5, 6], {1}, 2) == 0.0


def test_ndcg_binary_gains() -> None:
    # Hit at rank 2 only, one target: (1/log2(3)) / (1/log2(2)).
    assert ndcg_at_k([7, 1, 8], {1}, 3) == pytest.approx(1 / math.log2(3))
    # Hits at ranks 1 and 3, two targets: (1 + 1/2) / (1 + 1/log2(3)).
    expected = (1 + 0.5) / (1 + 1 / math.log2(3))
    assert ndcg_at_k([1, 9, 2], {1, 2}, 3) == pytest.approx(expected)
    assert ndcg_at_k([1, 2], {1, 2}, 2) == pytest.approx(1.0)


def test_empty_targets_are_rejected() -> None:
    with pytest.raises(ValueError):
        recall_at_k([1], set(), 1)


def test_accumulator_means_over_users() -> None:
    acc = MetricAccumulator(2)
    acc.add([1, 2], {1})
    acc.add([3, 4], {1})
    assert acc.users == 2
    assert acc.recall == pytest.approx(0.5)
    assert acc.ndcg == pytest.approx(0.5)


def test_dense_metrics_match_the_list_versions() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(5, 12, generator=generator)
    targets = torch.rand(5, 12, generator=generator) < 0.3
    targets[:, 0] = True
    recall, ndcg = dense_recall_ndcg(scores, targets, 4)
    for row in range(5):
        ranked = torch.argsort(scores[row], descending=True).tolist()
        wanted = set(torch.nonzero(targets[row]).flatten().tolist())
        assert float(recall[row]) == pytest.approx(recall_at_k(ranked, wanted, 4), abs=1e-6)
        assert float(ndcg[row]) == pytest.approx(ndcg_at_k(ranked, wanted, 4), abs=1e-6)
