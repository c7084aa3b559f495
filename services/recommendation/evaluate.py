"""Offline evaluation with full ranking, next to baselines computed in the same run.

Protocol (the data README's): users and items are those of the model's training window; test
targets are the training users' purchases of training items in [test_from, test_until]; every
item is ranked (no sampled negatives); Recall@K = hits / min(K, |targets|); NDCG@K with binary
gains; "new items only" removes the user's training purchases from both the ranking and the
targets; users without targets are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from services.recommendation.data import PURCHASE, Interactions
from services.recommendation.features import DAY
from services.recommendation.model import RecommenderModel, score_batch
from services.recommendation.train import IndexedLog, TrainConfig, fit_item_item, rank_all

Scorer = Callable[[np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class EvalRow:
    model: str
    recall_all: float
    ndcg_all: float
    users_all: int
    recall_new: float
    ndcg_new: float
    users_new: int


def _index_with_model(model: RecommenderModel, log: Interactions) -> IndexedLog:
    users = np.asarray([model.user_index.get(str(u), -1) for u in log.user_ids], dtype=np.int64)
    items = np.asarray([model.item_index.get(str(i), -1) for i in log.item_ids], dtype=np.int64)
    keep = (users >= 0) & (items >= 0)
    return IndexedLog(
        users[keep],
        items[keep],
        log.times[keep],
        log.event_types[keep].astype(np.int64),
        len(model.user_ids),
        len(model.item_ids),
    )


def baseline_scorers(train_log: IndexedLog, reference_time: float) -> dict[str, Scorer]:
    """Popularity (purchases in the last 30 days), repeat-buy and EASE (lambda 300)."""
    n = train_log.num_items
    purchases = train_log.event_types == PURCHASE
    recent = purchases & (train_log.times >= reference_time - 30 * DAY)
    popularity = torch.from_numpy(
        np.bincount(train_log.items[recent], minlength=n).astype(np.float32)
    )
    counts = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([train_log.users[purchases], train_log.items[purchases]])),
        torch.ones(int(purchases.sum())),
        (train_log.num_users, n),
        check_invariants=False,
    ).coalesce()
    dense_counts = counts.to_dense()
    ease = fit_item_item(train_log, TrainConfig(ease_lambda=300.0, max_dense_items=10**9))
    assert ease.dense is not None
    binary = (dense_counts > 0).float()
    tie_break = 1e-3 * popularity / popularity.max().clamp_min(1.0)

    def pop(users: np.ndarray) -> torch.Tensor:
        return popularity.unsqueeze(0).expand(len(users), -1)

    def repeat(users: np.ndarray) -> torch.Tensor:
        # Own purchase counts; popularity only breaks ties (users with short histories).
        return dense_counts[torch.from_numpy(users)] + tie_break.unsqueeze(0)

    def ease_scores(users: np.ndarray) -> torch.Tensor:
        assert ease.dense is not None
        return binary[torch.from_numpy(users)] @ ease.dense

    return {"popularity (30 d)": pop, "repeat-buy": repeat, "EASE (lambda 300)": ease_scores}


def evaluate(
    model: RecommenderModel,
    log: Interactions,
    *,
    test_from: float,
    test_until: float,
    k: int,
) -> list[EvalRow]:
    """Every baseline and the model on the same users, targets and ranking code."""
    reference = model.metadata.reference_time
    train_log = _index_with_model(model, log.between(None, reference))
    test_log = _index_with_model(model, log.between(test_from, test_until))
    targets: dict[int, set[int]] = {}
    buys = test_log.event_types == PURCHASE
    for user, item in zip(
        test_log.users[buys].tolist(), test_log.items[buys].tolist(), strict=True
    ):
        targets.setdefault(user, set()).add(item)
    users = sorted(targets)
    seen_sets: dict[int, np.ndarray] = {}
    purchases = train_log.event_types == PURCHASE
    for user in users:
        mask = purchases & (train_log.users == user)
        seen_sets[user] = np.unique(train_log.items[mask])

    popularity = torch.from_numpy(model.popularity.blend(reference))

    def blend(chunk: np.ndarray) -> torch.Tensor:
        return score_batch(
            model.item_item,
            model.weights,
            popularity,
            model.history.batch(chunk),
            reference,
            model.repurchase,
        )

    scorers = baseline_scorers(train_log, reference) | {f"shoptwin ({model.metadata.kind})": blend}
    rows = []
    for name, scorer in scorers.items():
        all_m, new_m = rank_all(scorer, users, targets, seen_sets.__getitem__, k)
        rows.append(
            EvalRow(
                name,
                round(all_m.recall, 4),
                round(all_m.ndcg, 4),
                all_m.users,
                round(new_m.recall, 4),
                round(new_m.ndcg, 4),
                new_m.users,
            )
        )
    return rows
