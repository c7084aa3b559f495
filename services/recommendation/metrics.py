"""Ranking metrics: Recall@K and NDCG@K with binary gains, over full rankings.

Recall@K = hits in the top K / min(K, |targets|) (so a perfect list scores 1 even when the user
bought more than K items); NDCG@K = DCG of the top K / DCG of an ideal list of min(K, |targets|)
hits, with gain 1 for a hit and discount 1/log2(rank + 1), rank counted from 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def recall_at_k(ranked: Sequence[int], targets: set[int], k: int) -> float:
    """Share of ``targets`` (capped at ``k``) found in the first ``k`` of ``ranked``."""
    if not targets:
        raise ValueError("targets must not be empty")
    hits = sum(1 for item in ranked[:k] if item in targets)
    return hits / min(k, len(targets))


def ndcg_at_k(ranked: Sequence[int], targets: set[int], k: int) -> float:
    """Normalised discounted cumulative gain of the first ``k`` of ``ranked`` (binary gains)."""
    if not targets:
        raise ValueError("targets must not be empty")
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in targets)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(targets))))
    return dcg / ideal


@dataclass
class MetricAccumulator:
    """Mean Recall@K and NDCG@K over users."""

    k: int
    recall_sum: float = 0.0
    ndcg_sum: float = 0.0
    users: int = 0

    def add(self, ranked: Sequence[int], targets: set[int]) -> None:
        """Add one user's ranking; users without targets must be skipped by the caller."""
        self.recall_sum += recall_at_k(ranked, targets, self.k)
        self.ndcg_sum += ndcg_at_k(ranked, targets, self.k)
        self.users += 1

    @property
    def recall(self) -> float:
        return self.recall_sum / self.users if self.users else 0.0

    @property
    def ndcg(self) -> float:
        return self.ndcg_sum / self.users if self.users else 0.0


def dense_recall_ndcg(
    scores: torch.Tensor, targets: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-user Recall@K and NDCG@K for dense ``scores`` and boolean ``targets`` (users x
    items), the same definitions as :func:`recall_at_k` and :func:`ndcg_at_k`. Every user must
    have at least one target."""
    k = min(k, scores.shape[1])
    top = torch.topk(scores, k, dim=1).indices
    hits = torch.gather(targets, 1, top).float()
    counts = targets.sum(dim=1).clamp_max(k).float()
    discounts = 1.0 / torch.log2(torch.arange(k, dtype=torch.float32) + 2.0)
    ideal = torch.cumsum(discounts, 0)[counts.long() - 1]
    return hits.sum(1) / counts, (hits * discounts).sum(1) / ideal
