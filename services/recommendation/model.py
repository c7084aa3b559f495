"""The recommender: an item-item model (EASE, or low-rank factors for large catalogues) blended
with the shopper's own purchase history and recent item popularity.

score(u, i) = itemitem(u, i) / max_j itemitem(u, j)                 (dense over items)
            + beta  * popularity_14d(i) / max_j popularity_14d(j)   (one vector per model)
            + alpha * repeat(u, i) / max_j repeat(u, j)              (u's history entries only)

``itemitem(u, .)`` is ``x_u @ B`` where ``x_u`` holds u's items weighted by an exponential
decay of their age, and ``B`` is the EASE weight matrix (closed form in PyTorch, items x items).
Above ``max_dense_items`` items ``B`` does not fit, so it is replaced by low-rank factors
``P Q^T`` and scored as ``(x_u @ P) @ Q^T``: one matmul per batch either way.
``repeat(u, i) = count(u, i) * rate(i)^gamma * exp(-days since u last bought i / tau_repeat)``,
``rate(i)`` the share of i's buyers who bought it on two days or more (consumables are bought
again, one-off items are not; :func:`repeat_term`).
``alpha``, ``beta``, ``tau_repeat`` and the EASE settings are chosen on a validation window cut
from the end of the training window (see :mod:`services.recommendation.train`). The score is
additive so that serving touches the catalogue only through one dense matmul and one vector add.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.recommendation.features import DAY, Popularity, UserHistory

MODEL_FORMAT = 1
#: Items per block in the block top-k of serving (see :func:`blend_top_k`).
SCORE_BLOCK = 128


@dataclass(frozen=True)
class BlendWeights:
    """The blend's weights (see the module docstring)."""

    alpha: float = 1.0
    beta: float = 0.1
    tau_repeat_days: float = 365.0
    #: gamma: how much an item's repurchase rate weighs in the repeat term (0: not at all, as
    #: in models trained before it existed).
    repeat_rate_power: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "tau_repeat_days": self.tau_repeat_days,
            "repeat_rate_power": self.repeat_rate_power,
        }


class NormOrder:
    """The items of a low-rank model sorted by the norm of their factor, largest first.

    ``|q . Q_i| <= |q| |Q_i|``, so once a prefix of this order is scored, every later item
    scores at most ``|q|`` times the next norm: :func:`lowrank_top_k` stops there. Items of a
    trained PureSVD model have norms that fall fast with popularity (the leverage of rare items
    is small), so most users' exact top-k is settled after a few thousand items.
    """

    def __init__(self, right: torch.Tensor) -> None:
        norms = right.norm(dim=1)
        self.order = torch.argsort(norms, descending=True)
        self.position = torch.empty_like(self.order)
        self.position[self.order] = torch.arange(len(self.order))
        #: right^T with columns in norm order (contiguous, for the chunked matmul).
        self.right_t = right[self.order].T.contiguous()
        #: Norms in order, with a trailing 0 (the bound after the last item); a list, as
        #: serving reads single entries.
        self.norms_list: list[float] = torch.cat([norms[self.order], torch.zeros(1)]).tolist()

    def prior_bounds(self, prior: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        """``prior`` in norm order and its suffix maxima (with a trailing 0): the largest
        popularity term of any item from each position on."""
        ordered = prior[self.order]
        suffix = torch.flip(torch.cummax(torch.flip(ordered, [0]), 0).values, [0])
        return ordered, torch.cat([suffix, torch.zeros(1)]).tolist()


class ItemItem:
    """Item-item scores: a dense EASE matrix ``B`` or low-rank factors ``P``, ``Q``."""

    def __init__(
        self,
        dense: torch.Tensor | None = None,
        left: torch.Tensor | None = None,
        right: torch.Tensor | None = None,
    ) -> None:
        if (dense is None) == (left is None or right is None):
            raise ValueError("give either the dense matrix or both low-rank factors")
        self.dense = dense
        self.left = left
        self.right = right
        # Serving multiplies (users x rank) by right^T: a contiguous rank x items copy makes
        # that matmul ~1.4x faster than the transposed view at 100k items (memory-bound).
        self.right_t = right.T.contiguous() if right is not None else None
        self.norm_order = NormOrder(right) if right is not None else None

    @property
    def kind(self) -> str:
        return "dense" if self.dense is not None else "lowrank"

    @property
    def num_items(self) -> int:
        if self.dense is not None:
            return int(self.dense.shape[0])
        assert self.left is not None
        return int(self.left.shape[0])

    def user_scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """Scores (users x items) for sparse ``inputs`` (users x items, decayed weights)."""
        if self.dense is not None:
            return torch.sparse.mm(inputs, self.dense)
        assert self.left is not None and self.right_t is not None
        return torch.sparse.mm(inputs, self.left) @ self.right_t

    def item_scores(self, item: int) -> torch.Tensor:
        """Scores of every item given one item (the row of B), for similar-item lists."""
        if self.dense is not None:
            return self.dense[item]
        assert self.left is not None and self.right is not None
        return self.right @ self.left[item]

    def state(self) -> dict[str, torch.Tensor]:
        if self.dense is not None:
            return {"dense": self.dense}
        assert self.left is not None and self.right is not None
        return {"left": self.left, "right": self.right}

    @staticmethod
    def from_state(state: dict[str, torch.Tensor]) -> ItemItem:
        return ItemItem(state.get("dense"), state.get("left"), state.get("right"))


@dataclass
class HistoryBatch:
    """The histories of a batch of users, flattened: one entry per (row, item), rows in
    ascending order (the ranking code relies on both)."""

    size: int
    rows: np.ndarray
    items: np.ndarray
    input_weights: np.ndarray
    counts: np.ndarray
    last_times: np.ndarray

    @staticmethod
    def from_histories(histories: list[UserHistory]) -> HistoryBatch:
        """Flatten per-user histories (serving path)."""
        rows: list[int] = []
        items: list[int] = []
        weights: list[float] = []
        counts: list[float] = []
        lasts: list[float] = []
        for row, history in enumerate(histories):
            for item, count in history.counts.items():
                rows.append(row)
                items.append(item)
                weights.append(history.input_weight[item])
                counts.append(count)
                lasts.append(history.last_time[item])
        return HistoryBatch(
            len(histories),
            np.asarray(rows, dtype=np.int64),
            np.asarray(items, dtype=np.int64),
            np.asarray(weights, dtype=np.float32),
            np.asarray(counts, dtype=np.float32),
            np.asarray(lasts, dtype=np.float64),
        )

    @staticmethod
    def concat(batches: list[HistoryBatch]) -> HistoryBatch:
        """Stack batches (rows renumbered in order)."""
        if len(batches) == 1:
            return batches[0]
        offsets = np.cumsum([0] + [b.size for b in batches[:-1]])
        return HistoryBatch(
            int(sum(b.size for b in batches)),
            np.concatenate([b.rows + o for b, o in zip(batches, offsets, strict=True)]),
            np.concatenate([b.items for b in batches]),
            np.concatenate([b.input_weights for b in batches]),
            np.concatenate([b.counts for b in batches]),
            np.concatenate([b.last_times for b in batches]),
        )


@dataclass
class HistoryTable:
    """Every user's history in CSR form (what training builds and the model directory stores)."""

    indptr: np.ndarray
    items: np.ndarray
    counts: np.ndarray
    last_times: np.ndarray
    input_weights: np.ndarray
    purchased: np.ndarray

    @property
    def num_users(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def batch(self, users: np.ndarray) -> HistoryBatch:
        """The histories of ``users`` (row indices) as one batch."""
        if len(users) == 1:  # the serving path: one user per request, plain slices
            start, end = int(self.indptr[users[0]]), int(self.indptr[users[0] + 1])
            return HistoryBatch(
                1,
                np.zeros(end - start, dtype=np.int64),
                self.items[start:end],
                self.input_weights[start:end],
                self.counts[start:end],
                self.last_times[start:end],
            )
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lengths = ends - starts
        index = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
        index = index.astype(np.int64) if index.size else np.zeros(0, dtype=np.int64)
        return HistoryBatch(
            len(users),
            np.repeat(np.arange(len(users)), lengths),
            self.items[index],
            self.input_weights[index],
            self.counts[index],
            self.last_times[index],
        )

    def user_history(self, user: int) -> UserHistory:
        """One user's history as the mutable serving structure."""
        start, end = int(self.indptr[user]), int(self.indptr[user + 1])
        history = UserHistory()
        for pos in range(start, end):
            item = int(self.items[pos])
            history.counts[item] = float(self.counts[pos])
            history.last_time[item] = float(self.last_times[pos])
            history.input_weight[item] = float(self.input_weights[pos])
            if self.purchased[pos]:
                history.purchased.add(item)
        return history

    def purchased_items(self, user: int) -> np.ndarray:
        start, end = int(self.indptr[user]), int(self.indptr[user + 1])
        return self.items[start:end][self.purchased[start:end]]


def score_batch(
    item_item: ItemItem,
    weights: BlendWeights,
    popularity: torch.Tensor,
    batch: HistoryBatch,
    now: float,
    repurchase: np.ndarray | None = None,
) -> torch.Tensor:
    """Scores (batch x items) of a batch of histories at model time ``now``.

    ``popularity`` is the popularity term scaled to a maximum of 1 (``Popularity.blend``);
    ``repurchase`` the items' repurchase rates (:func:`repeat_term`).
    """
    num_items = item_item.num_items
    rows = torch.from_numpy(batch.rows)
    items = torch.from_numpy(batch.items)
    inputs = torch.sparse_coo_tensor(
        torch.stack([rows, items]),
        torch.from_numpy(batch.input_weights),
        (batch.size, num_items),
        check_invariants=False,  # built from validated indices
    ).coalesce()
    scores = item_item.user_scores(inputs)
    # Per-user scale: heavy buyers have larger raw sums; the blend needs comparable ranges.
    # In place: at 100k items each extra batch x items temporary costs as much as the top-k.
    scores.div_(scores.amax(dim=1, keepdim=True).clamp_min_(1e-9))
    if weights.beta:
        scores.add_(popularity.unsqueeze(0), alpha=weights.beta)
    if batch.rows.size and weights.alpha:
        scores.index_put_(
            (rows, items), repeat_term(weights, batch, now, repurchase), accumulate=True
        )
    return scores


def repeat_term(
    weights: BlendWeights, batch: HistoryBatch, now: float, repurchase: np.ndarray | None = None
) -> torch.Tensor:
    """The repeat term of each history entry of ``batch``, scaled per row to a maximum of
    ``alpha`` (the blend's third term, nonzero only on a user's own items).

    ``repurchase`` holds each item's repurchase rate
    (:func:`services.recommendation.train.repurchase_rates`); with
    ``weights.repeat_rate_power`` > 0 an entry's count is weighted by its item's rate to that
    power, so that of two items bought as often, the one its buyers usually buy again ranks
    first."""
    days = np.maximum((now - batch.last_times) / DAY, 0.0)
    repeat = (batch.counts * np.exp(-days / weights.tau_repeat_days)).astype(np.float32)
    if repurchase is not None and weights.repeat_rate_power:
        repeat *= repurchase[batch.items] ** np.float32(weights.repeat_rate_power)
    row_max = _per_row(np.maximum, repeat, batch.rows, batch.size)
    scale = np.float32(weights.alpha) / np.maximum(row_max, np.float32(1e-9))
    return torch.from_numpy(scale[batch.rows] * repeat)


def block_maxima(values: torch.Tensor, block: int) -> torch.Tensor:
    """Maximum of each full block of ``block`` consecutive entries (a trailing partial block
    is left out): shape (len(values), width // block) for 2-D, (width // block,) for 1-D."""
    width = values.shape[-1]
    full = (width // block) * block
    head = values[..., :full]
    return head.reshape(*values.shape[:-1], width // block, block).amax(dim=-1)


def blend_top_k(
    item_item: ItemItem,
    weights: BlendWeights,
    popularity: torch.Tensor,
    popularity_block_max: torch.Tensor,
    batch: HistoryBatch,
    now: float,
    k: int,
    banned: list[np.ndarray],
    block: int = SCORE_BLOCK,
    repurchase: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Exact row-wise top-``k`` of :func:`score_batch` with ``banned[row]`` items excluded,
    touching the full catalogue only twice per row: the item-item matmul and one
    max-reduction over blocks of ``block`` items.

    ``score_batch`` normalises, adds popularity and repeat over the whole catalogue and then
    ranks. Here the raw item-item scores ``s`` are split into blocks and, with ``M`` the row
    maximum of ``s``:

    - every item of block ``b`` scores at most ``U_b = max_b(s) / M + beta * max_b(pop)``
      unless it is one of the user's own items (the repeat term), whose blocks are always
      kept;
    - the arg-max item of block ``b`` scores at least ``L_b = max_b(s) / M`` (popularity and
      repeat are never negative), so unless it is banned there are ``k`` allowed items
      scoring at least ``tau``, the ``(k + |banned|)``-th largest ``L_b``.

    Blocks with ``U_b < tau`` therefore hold no item of the exact top ``k``; the blend is
    computed on the other blocks (plus the partial last block) only. ``popularity`` is the
    blend's popularity term (max 1), ``popularity_block_max`` its :func:`block_maxima`.
    Returns None where the shortcut does not apply (a catalogue of fewer than
    ``k + |banned|`` blocks); callers then rank with :func:`score_batch`.
    """
    num_items = item_item.num_items
    num_blocks = num_items // block
    need = k + max((b.size for b in banned), default=0)
    if need > num_blocks:
        return None
    rows = torch.from_numpy(batch.rows)
    items = torch.from_numpy(batch.items)
    inputs = torch.sparse_coo_tensor(
        torch.stack([rows, items]),
        torch.from_numpy(batch.input_weights),
        (batch.size, num_items),
        check_invariants=False,  # built from validated indices
    ).coalesce()
    raw = item_item.user_scores(inputs)
    head_max = block_maxima(raw, block)
    tail_start = num_blocks * block
    row_max = head_max.amax(dim=1)
    if tail_start < num_items:
        row_max = torch.maximum(row_max, raw[:, tail_start:].amax(dim=1))
    row_max = row_max.clamp_min_(1e-9).unsqueeze(1)
    lower = head_max / row_max
    upper = lower + popularity_block_max.unsqueeze(0) * weights.beta if weights.beta else lower
    # tau per row: the (k + banned)-th largest lower bound (a lower bound on the k-th score).
    needs = torch.tensor([k + b.size for b in banned], dtype=torch.int64)
    ranked_lower = torch.topk(lower, int(needs.max()), dim=1).values
    tau = ranked_lower.gather(1, (needs - 1).unsqueeze(1))
    keep = upper >= tau
    in_head = items < tail_start
    if bool(in_head.any()):  # the user's own items carry the repeat term: keep their blocks
        keep[rows[in_head], items[in_head] // block] = True
    width = int(keep.sum(dim=1).max())
    chosen = torch.topk(keep.to(torch.int8), width, dim=1).indices  # all kept blocks per row
    offsets = torch.arange(block)
    positions = (chosen.unsqueeze(2) * block + offsets).reshape(batch.size, width * block)
    if tail_start < num_items:
        tail = torch.arange(tail_start, num_items).expand(batch.size, num_items - tail_start)
        positions = torch.cat([positions, tail], dim=1)
    # The same operations as score_batch, on the candidates only (same values bit for bit).
    scores = raw.gather(1, positions).div_(row_max)
    if weights.beta:
        scores.add_(popularity[positions], alpha=weights.beta)
    # Column of (row, item) among the candidates (-1: not a candidate), via the rank of its
    # block in `chosen`; items of the partial last block follow the chosen blocks in order.
    block_column = torch.full((batch.size, num_blocks), -1, dtype=torch.int64)
    block_column.scatter_(1, chosen, torch.arange(width).expand(batch.size, width) * block)

    def columns(row_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        in_tail = item_ids >= tail_start
        block_ids = torch.where(in_tail, 0, item_ids // block)
        base = block_column[row_ids, block_ids]
        head = torch.where(base >= 0, base + item_ids % block, -1)
        return torch.where(in_tail, width * block + item_ids - tail_start, head)

    if batch.rows.size and weights.alpha:
        repeat = repeat_term(weights, batch, now, repurchase)
        scores.index_put_((rows, columns(rows, items)), repeat, accumulate=True)
    if any(b.size for b in banned):
        ban_rows = torch.from_numpy(
            np.repeat(np.arange(batch.size), [b.size for b in banned]).astype(np.int64)
        )
        ban_cols = columns(ban_rows, torch.from_numpy(np.concatenate(banned).astype(np.int64)))
        hit = ban_cols >= 0  # banned items outside the candidates cannot be chosen anyway
        scores[ban_rows[hit], ban_cols[hit]] = -torch.inf
    values, picked = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    return values, positions.gather(1, picked)


def lowrank_top_k(
    item_item: ItemItem,
    weights: BlendWeights,
    prior_bounds: tuple[torch.Tensor, list[float]],
    popularity: torch.Tensor,
    batch: HistoryBatch,
    now: float,
    k: int,
    banned: list[np.ndarray],
    first_chunk: int = 2048,
    max_fraction: float = 0.5,
    stats: dict[str, float] | None = None,
    repurchase: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Exact row-wise top-``k`` of :func:`score_batch` for a low-rank model, with
    ``banned[row]`` excluded, scoring items in :class:`NormOrder` chunks and stopping each row
    as soon as no later item can enter its top ``k``.

    After a prefix ``[0, c)`` of the norm order, row ``u`` (query ``q``) knows its raw scores
    ``s`` there; every later item has ``s <= |q| * norm[c]``. The row stops when

    - that bound is at most the prefix maximum ``m`` (so ``M = max(m, 1e-9)`` is the row
      maximum the blend divides by, exactly), and
    - ``bound / M + beta * (largest popularity term from c on) < tau / M``, where ``tau`` is
      the ``(k + |banned|)``-th largest ``s`` in the prefix: those items each score at least
      ``s / M`` (popularity and repeat are never negative), and at most ``|banned|`` of them
      are banned.

    The user's own items (the repeat term) are always scored, inside or outside the prefix.
    Chunks double in size, so a model without norm structure (random factors) costs a few
    matmuls over the whole catalogue, like :func:`score_batch`. Values equal
    ``score_batch``'s up to float rounding of the matmul; ``prior_bounds`` is
    ``item_item.norm_order.prior_bounds(popularity)``.

    Rows that have not stopped after ``max_fraction`` of the catalogue (factors without norm
    structure) are given up: their row numbers come back as the third value and their
    results are to be ignored; the caller ranks them with :func:`blend_top_k`, which is
    cheaper over the whole catalogue. ``stats``, when given, receives ``items_scored`` (the
    mean prefix length per row) and ``unfinished`` (rows given up).

    Only the matmul runs in torch (its thread settings); everything else is numpy on views of
    the same memory. A batch of a few rows takes ~100 small array operations, and a numpy
    call costs about a microsecond where a torch call costs several (measured: 40 % less CPU
    per batch of 6 at 100k items than the same steps in torch, 50 % less for a batch of 1).
    """
    order = item_item.norm_order
    assert order is not None and item_item.left is not None and item_item.right is not None
    num_items = item_item.num_items
    size = batch.size
    rows, items = batch.rows, batch.items
    # x_u @ P over the user's few items (rows ascending, see HistoryBatch).
    weighted = item_item.left.numpy()[items] * batch.input_weights[:, None]
    query = _per_row(np.add, weighted, rows, size)
    query_norm = np.sqrt(np.einsum("ij,ij->i", query, query))
    prior_ordered = prior_bounds[0].numpy()
    prior_suffix = prior_bounds[1]
    beta = weights.beta
    ban_sizes = np.fromiter((b.size for b in banned), dtype=np.int64, count=size)
    need_max = k + int(ban_sizes.max(initial=0))
    # Per-row results, filled in as rows stop; the loop keeps compact state for the rows
    # still going. ``act_top`` holds each row's ``need_max`` largest raw scores so far,
    # ascending, so its ``k + |banned|``-th largest is column ``act_tau``.
    running_max = np.full(size, -np.inf, dtype=np.float32)
    prefix = np.full(size, num_items, dtype=np.int64)
    act_rows = np.arange(size)
    act_query, act_norm = query, query_norm
    act_max = np.full(size, -np.inf, dtype=np.float32)
    act_top = np.full((size, need_max), -np.inf, dtype=np.float32)
    act_tau = need_max - k - ban_sizes
    pieces: list[tuple[np.ndarray | None, int, int, np.ndarray]] = []
    norms = order.norms_list
    start, chunk = 0, first_chunk
    limit = max(first_chunk, int(num_items * max_fraction))
    while act_rows.size and start < num_items:
        if start >= limit:
            break  # no norm structure to exploit: the caller ranks these rows in full
        end = min(num_items, start + chunk)
        raw = (torch.from_numpy(act_query) @ order.right_t[:, start:end]).numpy()
        pieces.append((None if act_rows.size == size else act_rows, start, end, raw))
        np.maximum(act_max, raw.max(axis=1), out=act_max)
        cut = raw.shape[1] - min(need_max, raw.shape[1])  # from here on: the chunk's top
        chunk_top = np.partition(raw, cut, axis=1)[:, cut:]
        candidates = np.concatenate([act_top, chunk_top], axis=1)
        candidates.sort(axis=1)
        act_top = candidates[:, -need_max:]
        bound = act_norm * norms[end]
        tau = act_top[np.arange(act_rows.size), act_tau]
        slack = beta * prior_suffix[end]
        done = (bound <= act_max) & (bound + np.maximum(act_max, 1e-9) * slack < tau)
        if end >= num_items:
            done[:] = True
        if done.any():
            finished = act_rows[done]
            running_max[finished] = act_max[done]
            prefix[finished] = end
            keep = ~done
            act_rows, act_query, act_norm = act_rows[keep], act_query[keep], act_norm[keep]
            act_max, act_top, act_tau = act_max[keep], act_top[keep], act_tau[keep]
        start, chunk = end, chunk * 2
    unfinished = act_rows.tolist()
    if unfinished:  # their results are ignored; keep the arithmetic below finite
        running_max[act_rows] = act_max
        prefix[act_rows] = start
    if stats is not None:
        stats["items_scored"] = float(prefix.mean())
        stats["unfinished"] = float(len(unfinished))
    row_max = np.maximum(running_max, np.float32(1e-9))
    repeat = (
        repeat_term(weights, batch, now, repurchase).numpy()
        if rows.size and weights.alpha
        else np.zeros(rows.size, dtype=np.float32)
    )
    position = order.position.numpy()
    own_positions = position[items]
    any_banned = bool(ban_sizes.any())
    ban_rows = np.repeat(np.arange(size), ban_sizes)
    ban_items = np.concatenate(banned).astype(np.int64) if any_banned else ban_rows
    ban_positions = position[ban_items]
    # The user's own items beyond their prefix are scored one by one below.
    outside = own_positions >= prefix[rows]
    if any_banned:
        outside &= ~np.isin(rows * num_items + items, ban_rows * num_items + ban_items)
    # Every row's candidates side by side in one (size x width) matrix: each scored piece's
    # top k in a block of columns, then the own items outside the prefix.
    piece_k = [min(k, piece[3].shape[1]) for piece in pieces]
    outside_width = int(np.bincount(rows[outside], minlength=size).max(initial=0))
    width = max(sum(piece_k) + outside_width, k)
    merged = np.full((size, width), -np.inf, dtype=np.float32)
    merged_ids = np.zeros((size, width), dtype=np.int64)
    ordered_ids = order.order.numpy()
    column = 0
    # Blend each scored piece (the same operations as score_batch) and keep its top k: the
    # work is proportional to the items scored, not to the catalogue.
    for (piece_rows, piece_start, piece_end, scored), kk in zip(pieces, piece_k, strict=True):
        raw = scored  # blended in place
        inside = (own_positions >= piece_start) & (own_positions < piece_end)
        if piece_rows is None:  # every row of the batch
            raw /= row_max[:, None]
            local_rows, ban_local = rows, ban_rows
        else:
            raw /= row_max[piece_rows][:, None]
            local = np.full(size, -1, dtype=np.int64)
            local[piece_rows] = np.arange(piece_rows.size)
            local_rows, ban_local = local[rows], local[ban_rows]
            inside &= local_rows >= 0
        if beta:
            raw += beta * prior_ordered[piece_start:piece_end]
        # One entry per (row, item), so a plain fancy-index add accumulates correctly.
        raw[local_rows[inside], own_positions[inside] - piece_start] += repeat[inside]
        if any_banned:
            hit = (ban_positions >= piece_start) & (ban_positions < piece_end) & (ban_local >= 0)
            raw[ban_local[hit], ban_positions[hit] - piece_start] = -np.inf
        values, picked = _top_unsorted(raw, kk)
        target = slice(None) if piece_rows is None else piece_rows
        merged[target, column : column + kk] = values
        merged_ids[target, column : column + kk] = ordered_ids[picked + piece_start]
        column += kk
    if outside.any():
        out_rows, out_items = rows[outside], items[outside]
        own = np.einsum("ij,ij->i", query[out_rows], item_item.right.numpy()[out_items])
        own = own / row_max[out_rows] + beta * popularity.numpy()[out_items] + repeat[outside]
        # Rows ascend, so an entry's column is its index minus its row's first index.
        columns = column + np.arange(out_rows.size) - np.searchsorted(out_rows, out_rows)
        merged[out_rows, columns] = own
        merged_ids[out_rows, columns] = out_items
    values, picked = _top_unsorted(merged, k)
    by_score = np.argsort(-values, axis=1, kind="stable")
    row_index = np.arange(size)[:, None]
    ids = merged_ids[row_index, picked][row_index, by_score]
    return torch.from_numpy(values[row_index, by_score]), torch.from_numpy(ids), unfinished


def _per_row(reduce: np.ufunc, values: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """``reduce`` (``np.add``, ``np.maximum``) over each row's entries of ``values``, 0 for a
    row without entries. ``rows`` ascend (see :class:`HistoryBatch`), so one ``reduceat``
    does it."""
    out = np.zeros((size, *values.shape[1:]), dtype=np.float32)
    if rows.size:
        present, starts = np.unique(rows, return_index=True)
        out[present] = reduce.reduceat(values, starts, axis=0)
    return out


def _top_unsorted(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest entries of each row of ``scores`` (values, column indices), in no
    particular order."""
    width = scores.shape[1]
    if k >= width:
        return scores, np.broadcast_to(np.arange(width), scores.shape)
    picked = np.argpartition(scores, width - k, axis=1)[:, width - k :]
    return scores[np.arange(scores.shape[0])[:, None], picked], picked


def top_k_rows(
    scores: torch.Tensor, k: int, block: int = SCORE_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact row-wise top-``k`` (values, indices) of a 2-D ``scores`` matrix, faster than
    ``torch.topk`` over a wide catalogue.

    The top ``k`` entries of a row lie in the ``k`` blocks (of ``block`` consecutive items) with
    the largest block maxima, so one cheap max-reduction over the row, a top-k over the block
    maxima and a top-k over ``k * block`` candidates give the same answer as a full top-k
    (about 3x faster at 100k items). Small ``k * block`` relative to the row width is where it
    pays; otherwise this falls back to ``torch.topk``. With tied values the chosen indices may
    differ from ``torch.topk``'s; the values do not.
    """
    rows, width = scores.shape
    k = min(k, width)
    num_blocks = width // block
    if k * block * 4 > width or num_blocks < k or scores.stride(1) != 1:
        return torch.topk(scores, k, dim=1)
    blocks = scores.as_strided((rows, num_blocks, block), (scores.stride(0), block, 1))
    top_blocks = torch.topk(blocks.amax(dim=2), k, dim=1).indices
    candidates = torch.gather(blocks, 1, top_blocks.unsqueeze(2).expand(rows, k, block))
    candidates = candidates.reshape(rows, k * block)
    positions = (top_blocks.unsqueeze(2) * block + torch.arange(block)).reshape(rows, k * block)
    tail = width - num_blocks * block
    if tail:  # the last, partial block is always a candidate
        candidates = torch.cat([candidates, scores[:, num_blocks * block :]], dim=1)
        positions = torch.cat(
            [positions, torch.arange(num_blocks * block, width).expand(rows, tail)], dim=1
        )
    values, chosen = torch.topk(candidates, k, dim=1)
    return values, positions.gather(1, chosen)


@dataclass
class ModelMetadata:
    version: str
    kind: str
    trained_at: float
    reference_time: float
    num_users: int
    num_items: int
    hyperparameters: dict[str, Any]
    metrics: dict[str, float]
    data: str

    def as_dict(self) -> dict[str, Any]:
        return {"format": MODEL_FORMAT, **self.__dict__}


@dataclass
class RecommenderModel:
    """Everything a trained model holds; immutable once loaded (serving swaps whole models)."""

    metadata: ModelMetadata
    item_ids: list[str]
    user_ids: list[str]
    descriptions: dict[str, str]
    history: HistoryTable
    popularity: Popularity
    item_item: ItemItem
    weights: BlendWeights
    #: Each item's repurchase rate (the repeat term's item weight; ``repeat_term``). None in
    #: models trained before it existed.
    repurchase: np.ndarray | None = None
    #: Set when loaded from (or saved to) a directory.
    directory: Path | None = None

    def __post_init__(self) -> None:
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.user_index = {user: u for u, user in enumerate(self.user_ids)}

    @property
    def tau_input_days(self) -> float:
        return float(self.metadata.hyperparameters["tau_input_days"])

    def input_weight(self, when: float) -> float:
        """Decayed item-item input weight of an event at ``when``, at the reference time."""
        return float(np.exp((when - self.metadata.reference_time) / (self.tau_input_days * DAY)))

    def save(self, directory: Path) -> None:
        """Write the model directory (weights, maps, histories, metadata.json)."""
        directory.mkdir(parents=True, exist_ok=False)
        torch.save(
            {"item_item": self.item_item.state(), "blend": self.weights.as_dict()},
            directory / "weights.pt",
        )
        (directory / "items.json").write_text(
            json.dumps({"item_ids": self.item_ids, "descriptions": self.descriptions}),
            encoding="utf-8",
        )
        (directory / "users.json").write_text(json.dumps(self.user_ids), encoding="utf-8")
        h = self.history
        np.savez_compressed(
            directory / "history.npz",
            indptr=h.indptr,
            items=h.items,
            counts=h.counts,
            last_times=h.last_times,
            input_weights=h.input_weights,
            purchased=h.purchased,
        )
        np.savez_compressed(
            directory / "popularity.npz",
            sums=self.popularity.sums,
            reference_time=np.asarray(self.popularity.reference_time),
        )
        if self.repurchase is not None:
            np.save(directory / "repurchase.npy", self.repurchase)
        # metadata.json last: its presence marks a complete model directory.
        (directory / "metadata.json").write_text(
            json.dumps(self.metadata.as_dict(), indent=2) + "\n", encoding="utf-8"
        )
        self.directory = directory

    @staticmethod
    def load(directory: Path) -> RecommenderModel:
        """Read a model directory written by :meth:`save`; ``ValueError`` when it is not one."""
        meta_path = directory / "metadata.json"
        if not meta_path.is_file():
            raise ValueError(f"{directory}: not a model directory (no metadata.json)")
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
        if raw.pop("format", None) != MODEL_FORMAT:
            raise ValueError(f"{directory}: unsupported model format")
        metadata = ModelMetadata(**raw)
        weights = torch.load(directory / "weights.pt", map_location="cpu", weights_only=True)
        blend = BlendWeights(**{k: float(v) for k, v in weights["blend"].items()})
        items = json.loads((directory / "items.json").read_text(encoding="utf-8"))
        users = json.loads((directory / "users.json").read_text(encoding="utf-8"))
        with np.load(directory / "history.npz") as h:
            history = HistoryTable(
                h["indptr"],
                h["items"],
                h["counts"],
                h["last_times"],
                h["input_weights"],
                h["purchased"],
            )
        with np.load(directory / "popularity.npz") as p:
            popularity = Popularity(len(items["item_ids"]), float(p["reference_time"]))
            popularity.sums = p["sums"].copy()
        rates = directory / "repurchase.npy"  # absent in models trained before the rates
        return RecommenderModel(
            metadata,
            list(items["item_ids"]),
            list(users),
            dict(items["descriptions"]),
            history,
            popularity,
            ItemItem.from_state(weights["item_item"]),
            blend,
            np.load(rates) if rates.is_file() else None,
            directory,
        )
