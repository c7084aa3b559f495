"""The serving shortcut ``blend_top_k`` against the full blend (``score_batch``) and a top-k."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from services.recommendation.bench import ranking_check, synthetic_model
from services.recommendation.engine import Catalog, ItemFilter, Query, ServingState
from services.recommendation.features import DAY
from services.recommendation.model import (
    BlendWeights,
    HistoryBatch,
    ItemItem,
    blend_top_k,
    block_maxima,
    lowrank_top_k,
    score_batch,
)


def _batch(rng: np.random.Generator, users: int, num_items: int, now: float) -> HistoryBatch:
    rows, items = [], []
    for row in range(users):
        # A few popular items and a few from anywhere, including the partial last block.
        own = np.unique(
            np.concatenate(
                [
                    rng.integers(0, 50, size=3),
                    rng.integers(0, num_items, size=int(rng.integers(1, 25))),
                ]
            )
        )
        rows.extend([row] * len(own))
        items.extend(own.tolist())
    size = len(items)
    return HistoryBatch(
        users,
        np.asarray(rows, dtype=np.int64),
        np.asarray(items, dtype=np.int64),
        rng.uniform(0.05, 1.0, size=size).astype(np.float32),
        rng.integers(1, 6, size=size).astype(np.float32),
        now - rng.uniform(0, 200 * DAY, size=size),
    )


def _model(kind: str, num_items: int, seed: int) -> ItemItem:
    generator = torch.Generator().manual_seed(seed)
    if kind == "dense":
        dense = torch.randn(num_items, num_items, generator=generator) * 0.1
        return ItemItem(dense=dense.fill_diagonal_(0.0))
    factors = torch.randn(num_items, 16, generator=generator)
    return ItemItem(left=factors, right=factors.clone())


@pytest.mark.parametrize(
    ("kind", "num_items", "beta", "alpha", "k"),
    [
        ("lowrank", 20_000, 0.1, 1.0, 20),
        ("lowrank", 20_003, 0.8, 4.0, 50),
        ("lowrank", 10_000, 0.0, 0.0, 10),
        ("dense", 3_000, 0.05, 1.0, 3),
        ("dense", 2_560, 0.2, 2.0, 1),
    ],
)
def test_blend_top_k_equals_the_full_blend(
    kind: str, num_items: int, beta: float, alpha: float, k: int
) -> None:
    rng = np.random.default_rng(num_items + k)
    now = 1_000 * DAY
    item_item = _model(kind, num_items, seed=k)
    # Items' repurchase rates weigh the repeat term (a power of 0.5), as trained models do.
    weights = BlendWeights(alpha=alpha, beta=beta, tau_repeat_days=90.0, repeat_rate_power=0.5)
    repurchase = rng.uniform(0.05, 1.0, num_items).astype(np.float32)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.7
    rng.shuffle(popularity)
    prior = torch.from_numpy((popularity / popularity.max()).astype(np.float32))
    batch = _batch(rng, 12, num_items, now)
    # Banned items: none, a few random ones, some of the user's own items, the whole top.
    full = score_batch(item_item, weights, prior, batch, now, repurchase)
    banned = [np.zeros(0, dtype=np.int64) for _ in range(batch.size)]
    banned[1] = rng.choice(num_items, size=10, replace=False)
    banned[2] = batch.items[batch.rows == 2][:5]
    banned[3] = torch.topk(full[3], 2 * k).indices.numpy()
    found = blend_top_k(
        item_item,
        weights,
        prior,
        block_maxima(prior, 128),
        batch,
        now,
        k,
        banned,
        repurchase=repurchase,
    )
    assert found is not None
    values, indices = found
    for row, items in enumerate(banned):
        if items.size:
            full[row, torch.from_numpy(items)] = -math.inf
    expected_values, expected_indices = torch.topk(full, k, dim=1)
    assert torch.equal(values, expected_values)
    # Indices agree wherever the values are not tied.
    for row in range(batch.size):
        distinct = {float(v) for v in expected_values[row]}
        if len(distinct) == k:
            assert indices[row].tolist() == expected_indices[row].tolist()
        else:
            assert sorted(full[row, indices[row]].tolist()) == sorted(expected_values[row].tolist())


def test_blend_top_k_declines_a_catalogue_smaller_than_k_blocks() -> None:
    item_item = _model("lowrank", 1_000, seed=1)
    batch = _batch(np.random.default_rng(1), 2, 1_000, 0.0)
    prior = torch.ones(1_000)
    found = blend_top_k(
        item_item,
        BlendWeights(),
        prior,
        block_maxima(prior, 128),
        batch,
        0.0,
        20,
        [np.zeros(0)] * 2,
    )
    assert found is None


def _lowrank(num_items: int, seed: int, structured: bool) -> ItemItem:
    """Random factors, or factors whose norms fall with the item index as PureSVD's do."""
    generator = torch.Generator().manual_seed(seed)
    factors = torch.randn(num_items, 16, generator=generator) / 4.0
    if structured:
        factors *= (1.0 / torch.arange(1, num_items + 1) ** 0.6).unsqueeze(1)
        factors = factors[torch.randperm(num_items, generator=generator)]
    return ItemItem(left=factors, right=factors.clone())


@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize(
    ("num_items", "beta", "alpha", "k"),
    [(20_000, 0.1, 1.0, 20), (9_999, 0.8, 4.0, 50), (3_000, 0.0, 0.0, 10), (500, 0.2, 1.0, 400)],
)
def test_lowrank_top_k_equals_the_full_blend(
    structured: bool, num_items: int, beta: float, alpha: float, k: int
) -> None:
    rng = np.random.default_rng(num_items + k + structured)
    now = 1_000 * DAY
    item_item = _lowrank(num_items, seed=k, structured=structured)
    assert item_item.norm_order is not None
    weights = BlendWeights(alpha=alpha, beta=beta, tau_repeat_days=90.0, repeat_rate_power=1.0)
    repurchase = rng.uniform(0.05, 1.0, num_items).astype(np.float32)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.7
    rng.shuffle(popularity)
    prior = torch.from_numpy((popularity / popularity.max()).astype(np.float32))
    batch = _batch(rng, 12, num_items, now)
    full = score_batch(item_item, weights, prior, batch, now, repurchase)
    banned = [np.zeros(0, dtype=np.int64) for _ in range(batch.size)]
    banned[1] = rng.choice(num_items, size=10, replace=False)
    banned[2] = batch.items[batch.rows == 2][:5]
    banned[3] = torch.topk(full[3], min(2 * k, num_items // 4)).indices.numpy()
    values, indices, unfinished = lowrank_top_k(
        item_item,
        weights,
        item_item.norm_order.prior_bounds(prior),
        prior,
        batch,
        now,
        k,
        banned,
        first_chunk=256,
        max_fraction=1.0,
        repurchase=repurchase,
    )
    assert unfinished == []
    for row, items in enumerate(banned):
        if items.size:
            full[row, torch.from_numpy(items)] = -math.inf
    expected_values = torch.topk(full, k, dim=1).values
    # Equal up to the float rounding of a differently blocked matmul.
    assert torch.allclose(values, expected_values, rtol=1e-5, atol=1e-5)
    for row in range(batch.size):
        chosen = full[row, indices[row]]
        assert torch.allclose(chosen, expected_values[row], rtol=1e-5, atol=1e-5)
        assert len(set(indices[row].tolist())) == k


def test_lowrank_top_k_scores_few_items_when_norms_fall() -> None:
    """The early stop is what makes it fast: with PureSVD-like norms most rows stop early."""
    num_items = 50_000
    item_item = _lowrank(num_items, seed=3, structured=True)
    assert item_item.norm_order is not None
    rng = np.random.default_rng(3)
    batch = _batch(rng, 8, num_items, 0.0)
    widths: list[int] = []
    right_t = item_item.norm_order.right_t

    class Spy:
        """Records the width of every slice of the ordered factors the ranking multiplies."""

        def __getitem__(self, key: tuple[slice, slice]) -> torch.Tensor:
            widths.append(key[1].stop - key[1].start)
            return right_t[key]

    item_item.norm_order.right_t = Spy()  # type: ignore[assignment]
    prior = torch.zeros(num_items)
    _, _, unfinished = lowrank_top_k(
        item_item,
        BlendWeights(),
        item_item.norm_order.prior_bounds(prior),
        prior,
        batch,
        0.0,
        20,
        [np.zeros(0, dtype=np.int64)] * batch.size,
        first_chunk=1024,
    )
    assert unfinished == []
    assert widths and sum(widths) < num_items // 4


@pytest.mark.parametrize(
    ("factors", "norm_order"), [("svd", True), ("random", False), ("random", True)]
)
def test_serving_rank_equals_the_full_ranking(factors: str, norm_order: bool) -> None:
    """The engine's fast paths (norm order, block bounds, and block bounds for the rows the
    norm order gives up on) against the full blend with the same filters."""
    model = synthetic_model(6_000, 200, rank=16, factors=factors, seed=2)
    # A small catalogue keeps the test fast; the shortcuts are enabled for it explicitly.
    state = ServingState(model, Catalog(), shortcut_min_items=0)
    # The load-time probe picks the norm order for PureSVD factors only; forcing it on
    # random factors exercises the hand-over of unfinished rows.
    assert state.norm_order_pays == (factors == "svd")
    state.norm_order_pays = norm_order
    catalog = Catalog()
    queries = [Query(f"user-{u}", 20) for u in range(0, 200, 5)]
    queries.append(Query("user-3", 20, ItemFilter(exclude_purchased=True)))
    queries.append(Query("user-4", 30, ItemFilter(exclude_item_ids=("item-0", "item-1", "x"))))
    queries.append(Query("nobody", 20))
    prepared = [state.prepare(q, catalog) for q in queries]
    results = state.rank(prepared)
    prior, _, recent = state.priors()
    expected = torch.topk(state._full_scores(prepared, prior, recent), 30, dim=1)
    for row, (query, result) in enumerate(zip(queries, results, strict=True)):
        assert len(result.item_ids) == len(result.scores) == len(result.categories) == query.k
        assert result.scores == pytest.approx(expected.values[row, : query.k].tolist(), rel=1e-5)
    assert prepared[-2].unknown == ["x"]
    assert not {"item-0", "item-1"} & set(results[-2].item_ids)


@pytest.mark.parametrize("factors", ["svd", "random"])
def test_bench_ranking_check_reports_exact_recall(factors: str) -> None:
    """The benchmark's in-process check: the served top k against the exact top k. The
    shortcuts are exact, so anything short of (tie-level) 1.0 is a bug."""
    model = synthetic_model(6_000, 300, rank=16, factors=factors)
    check = ranking_check(model, k=20, users=64, shortcut_min_items=0)
    assert check["recall_at_k_vs_exact"] >= 0.99
    assert check["norm_order"] == float(factors == "svd")
    if factors == "svd":
        assert check["items_scored_per_user"] < 6_000


def test_small_catalogues_take_the_full_path() -> None:
    model = synthetic_model(6_000, 100, rank=16, factors="svd")
    state = ServingState(model, Catalog())
    assert not state.norm_order_pays
    catalog = Catalog()
    prepared = [state.prepare(Query(f"user-{u}", 10), catalog) for u in range(5)]
    prior, _, recent = state.priors()
    expected = torch.topk(state._full_scores(prepared, prior, recent), 10, dim=1)
    for row, result in enumerate(state.rank(prepared)):
        assert [model.item_index[i] for i in result.item_ids] == expected.indices[row].tolist()
