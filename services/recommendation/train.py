"""Training: item-item model in closed form, then the blend scorer on a validation window.

1. Cut the last ``validation_windows`` x ``label_days`` of the training window into validation
   windows. For each, build the histories, popularity and EASE models from the events before
   it, and choose by grid search the EASE lambda, the input decay and the popularity weight
   that maximise mean Recall@20 on new items. Where the items have descriptions, the weight
   of the descriptions in the EASE Gram matrix is chosen after the rest of the item-item
   part, by new-item Recall@20 too. Then choose the repeat weight, its decay and the weight
   of the items' repurchase rates that maximise mean Recall@20 on all purchases. The test
   window is never seen.
2. Rebuild everything from the whole training window with the chosen settings.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from tqdm import tqdm

from services.recommendation.data import EVENT_WEIGHTS, PURCHASE, Interactions
from services.recommendation.features import DAY, Popularity
from services.recommendation.metrics import MetricAccumulator, dense_recall_ndcg
from services.recommendation.model import (
    BlendWeights,
    HistoryTable,
    ItemItem,
    ModelMetadata,
    RecommenderModel,
    score_batch,
)


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters (defaults chosen on a validation split of the Online Retail data)."""

    ease_lambda: float = 300.0
    tau_input_days: float = 90.0
    #: Recency weighting of the EASE training matrix: a (user, item) cell is
    #: ``exp(-days since the user last bought the item / tau_matrix_days)`` instead of 1, so the
    #: co-purchase structure follows what shoppers buy now (the catalogue is seasonal).
    #: ``math.inf`` (or any value beyond the log's span, e.g. 1e6) gives the binary matrix.
    tau_matrix_days: float = 120.0
    label_days: float = 61.0
    validation_windows: int = 2
    ease_lambda_grid: tuple[float, ...] = (150.0, 300.0)
    tau_input_grid: tuple[float, ...] = (60.0, 120.0)
    tau_matrix_grid: tuple[float, ...] = (120.0, 365.0, 1e6)
    beta_grid: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
    alpha_grid: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    tau_repeat_grid: tuple[float, ...] = (90.0, 365.0, 1e6)
    #: gamma of the repeat term's item weight, ``repurchase rate ** gamma`` (0: none).
    repeat_rate_power_grid: tuple[float, ...] = (0.0, 0.5, 1.0)
    #: Weight of the items' descriptions in the EASE Gram matrix (see
    #: :func:`description_similarity`), relative to the mean diagonal of ``X^T X``; 0 is
    #: plain EASE. Tuned over ``side_weight_grid`` when the log has descriptions.
    side_weight: float = 0.0
    side_weight_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    #: Above this many items the dense EASE matrix is replaced by low-rank factors.
    max_dense_items: int = 20_000
    lowrank_rank: int = 128
    #: Largest validation users x items matrix held densely while tuning.
    max_validation_cells: int = 40_000_000
    seed: int = 0
    threads: int = 2
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class IndexedLog:
    """Interactions with user and item ids mapped to dense indices."""

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    event_types: np.ndarray
    num_users: int
    num_items: int

    def before(self, cutoff: float) -> IndexedLog:
        mask = self.times < cutoff
        return IndexedLog(
            self.users[mask],
            self.items[mask],
            self.times[mask],
            self.event_types[mask],
            self.num_users,
            self.num_items,
        )


def index_log(log: Interactions) -> tuple[IndexedLog, list[str], list[str]]:
    """Map ids to indices (sorted ids, so the maps are deterministic)."""
    user_ids, users = np.unique(log.user_ids.astype(str), return_inverse=True)
    item_ids, items = np.unique(log.item_ids.astype(str), return_inverse=True)
    indexed = IndexedLog(
        users.astype(np.int64),
        items.astype(np.int64),
        log.times,
        log.event_types.astype(np.int64),
        len(user_ids),
        len(item_ids),
    )
    return indexed, [str(u) for u in user_ids], [str(i) for i in item_ids]


def build_history(log: IndexedLog, reference_time: float, tau_input_days: float) -> HistoryTable:
    """Per (user, item): weighted count, last time, decayed input weight, purchased flag."""
    weights = (
        np.vectorize(lambda t: EVENT_WEIGHTS.get(int(t), 1.0), otypes=[np.float64])(log.event_types)
        if log.event_types.size
        else np.zeros(0)
    )
    keys = log.users * log.num_items + log.items
    unique, inverse = np.unique(keys, return_inverse=True)
    counts = np.bincount(inverse, weights=weights, minlength=len(unique))
    decay = np.exp((log.times - reference_time) / (tau_input_days * DAY))
    input_weights = np.bincount(inverse, weights=weights * decay, minlength=len(unique))
    last = np.full(len(unique), -np.inf)
    np.maximum.at(last, inverse, log.times)
    purchased = np.zeros(len(unique), dtype=bool)
    purchased[inverse[log.event_types == PURCHASE]] = True
    users = unique // log.num_items
    indptr = np.zeros(log.num_users + 1, dtype=np.int64)
    np.add.at(indptr, users + 1, 1)
    return HistoryTable(
        np.cumsum(indptr),
        (unique % log.num_items).astype(np.int64),
        counts.astype(np.float32),
        last,
        input_weights.astype(np.float32),
        purchased,
    )


def repurchase_rates(log: IndexedLog) -> np.ndarray:
    """Per item, the share of its buyers who bought it on two days or more, smoothed towards
    1/2 as ``(repeaters + 1) / (buyers + 2)`` (float32). Purchases only; one day's lines
    count once, so a large order is not a repurchase."""
    purchases = log.event_types == PURCHASE
    days = np.floor(log.times[purchases] / DAY).astype(np.int64)
    users, items = log.users[purchases], log.items[purchases]
    # Distinct (user, item, day), then the number of days per (user, item).
    user_item_day = np.unique(np.stack([users, items, days]), axis=1)
    pairs, day_counts = np.unique(user_item_day[:2], axis=1, return_counts=True)
    buyers = np.bincount(pairs[1], minlength=log.num_items)
    repeaters = np.bincount(pairs[1][day_counts > 1], minlength=log.num_items)
    return ((repeaters + 1.0) / (buyers + 2.0)).astype(np.float32)


def build_popularity(log: IndexedLog, reference_time: float) -> Popularity:
    popularity = Popularity(log.num_items, reference_time)
    weights = np.asarray([EVENT_WEIGHTS.get(int(t), 1.0) for t in log.event_types])
    popularity.add(log.items, log.times, weights)
    return popularity


def interaction_matrix_cells(
    log: IndexedLog, reference_time: float | None, tau_matrix_days: float
) -> tuple[np.ndarray, np.ndarray]:
    """The nonzero cells of the item-item training matrix: keys ``user * num_items + item`` and
    values ``exp(-days since the user's last event on the item / tau_matrix_days)`` (all 1 when
    ``tau_matrix_days`` is infinite or no reference time is given)."""
    keys, inverse = np.unique(log.users * log.num_items + log.items, return_inverse=True)
    if reference_time is None or math.isinf(tau_matrix_days):
        return keys, np.ones(len(keys))
    last = np.full(len(keys), -np.inf)
    np.maximum.at(last, inverse, log.times)
    age_days = np.maximum(reference_time - last, 0.0) / DAY
    return keys, np.exp(-age_days / tau_matrix_days)


def description_similarity(
    item_ids: list[str], descriptions: dict[str, str]
) -> torch.Tensor | None:
    """The items' descriptions as side information for EASE: ``D D^T`` (items x items, float64),
    ``D`` holding each item's L2-normalised TF-IDF word weights, so entry (i, j) is the cosine
    similarity of the two descriptions. None when fewer than two items have a description
    with words in it (event logs carry none).

    EASE with side information (Jeunen, Van Balen and Goethals 2020, "Closed-form models for
    collaborative filtering with side-information") treats every word as a pseudo-user who
    bought each item whose description has it: ``X^T X + w D D^T`` in place of ``X^T X``.
    Colour and size variants of one product ("RED SPOT CERAMIC DRAWER KNOB", "BLUE SPOT
    ...") then share weight even when no shopper has bought both yet, which is where the
    co-purchase matrix alone knows least: new items for a shopper.
    """
    texts = [descriptions.get(item, "") for item in item_ids]
    if sum(1 for text in texts if text.strip()) < 2:
        return None
    # Words of two letters or more; digits and sizes ("12", "3x4") say little about a product.
    vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b[^\W\d_]{2,}\b", dtype=np.float64)
    try:
        words = vectorizer.fit_transform(texts)
    except ValueError:  # no words at all
        return None
    return torch.from_numpy((words @ words.T).toarray())


def fit_item_item(
    log: IndexedLog,
    config: TrainConfig,
    reference_time: float | None = None,
    side: torch.Tensor | None = None,
) -> ItemItem:
    """EASE (closed form) on the user-item matrix, or low-rank factors above the limit.

    The matrix is binary, or recency-weighted when ``reference_time`` is given and
    ``config.tau_matrix_days`` is finite (see :func:`interaction_matrix_cells`). ``side``
    (:func:`description_similarity`) enters the dense model's Gram matrix with
    ``config.side_weight`` times the mean of its diagonal; the low-rank model ignores it.
    """
    n = log.num_items
    keys, values = interaction_matrix_cells(log, reference_time, config.tau_matrix_days)
    binary = (
        torch.zeros(log.num_users, n, dtype=torch.float64) if n <= config.max_dense_items else None
    )
    if binary is not None:
        binary[torch.from_numpy(keys // n), torch.from_numpy(keys % n)] = torch.from_numpy(values)
        gram = binary.T @ binary
        if side is not None and config.side_weight > 0:
            # On the scale of an average item's own mass in X^T X, so one weight carries
            # across logs of any size.
            gram += (config.side_weight * float(torch.diagonal(gram).mean())) * side
        gram += config.ease_lambda * torch.eye(n, dtype=torch.float64)
        precision = torch.linalg.inv(gram)
        weights = -precision / torch.diagonal(precision)
        weights.fill_diagonal_(0.0)
        return ItemItem(dense=weights.float())
    # Large catalogue: truncated SVD of the binary matrix (PureSVD); x P Q^T with P = Q = V.
    matrix = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([keys // n, keys % n])),
        torch.from_numpy(values).float(),
        (log.num_users, n),
        check_invariants=False,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    _, _, v = torch.svd_lowrank(matrix, q=min(config.lowrank_rank, n - 1))
    torch.random.set_rng_state(generator_state)
    return ItemItem(left=v.float().contiguous(), right=v.float().contiguous())


def purchase_targets(log: IndexedLog, start: float, end: float) -> dict[int, set[int]]:
    """Per user, the items purchased in [start, end)."""
    mask = (log.times >= start) & (log.times < end) & (log.event_types == PURCHASE)
    targets: dict[int, set[int]] = {}
    for user, item in zip(log.users[mask].tolist(), log.items[mask].tolist(), strict=True):
        targets.setdefault(user, set()).add(item)
    return targets


def rank_all(
    score: Callable[[np.ndarray], torch.Tensor],
    users: list[int],
    targets: dict[int, set[int]],
    seen: Callable[[int], np.ndarray],
    k: int,
    batch_size: int = 256,
) -> tuple[MetricAccumulator, MetricAccumulator]:
    """Recall/NDCG@k over ``users`` for all purchases and for new items only (full ranking)."""
    all_items = MetricAccumulator(k)
    new_items = MetricAccumulator(k)
    for start in range(0, len(users), batch_size):
        chunk = np.asarray(users[start : start + batch_size], dtype=np.int64)
        with torch.no_grad():
            scores = score(chunk).clone()
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.numpy()
        for row, user in enumerate(chunk.tolist()):
            all_items.add(top[row].tolist(), targets[user])
            own = seen(user)
            scores[row, torch.from_numpy(own)] = -torch.inf
        top_new = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.numpy()
        for row, user in enumerate(chunk.tolist()):
            fresh = targets[user] - set(seen(user).tolist())
            if fresh:
                new_items.add(top_new[row].tolist(), fresh)
    return all_items, new_items


class _ValidationWindow:
    """Features from the events before ``cut``, targets from [cut, end): one tuning window."""

    def __init__(
        self,
        log: IndexedLog,
        cut: float,
        end: float,
        config: TrainConfig,
        side: torch.Tensor | None = None,
    ) -> None:
        self.cut = cut
        self.config = config
        self.side = side
        self.before = log.before(cut)
        self.popularity = torch.from_numpy(build_popularity(self.before, cut).blend(cut))
        self.repurchase = repurchase_rates(self.before)
        targets = purchase_targets(log, cut, end)
        users = np.asarray(sorted(targets), dtype=np.int64)
        # Bound the dense users x items matrices (large logs: a seeded sample of users).
        limit = max(1, config.max_validation_cells // max(log.num_items, 1))
        if len(users) > limit:
            users = np.sort(np.random.default_rng(config.seed).choice(users, limit, replace=False))
        self.users = users
        n = log.num_items
        self.target = torch.zeros(len(users), n, dtype=torch.bool)
        for row, user in enumerate(users.tolist()):
            self.target[row, list(targets[user])] = True
        self.histories = {
            tau: build_history(self.before, cut, tau) for tau in config.tau_input_grid
        }
        first = self.histories[config.tau_input_grid[0]].batch(users)
        self.seen = torch.zeros(len(users), n, dtype=torch.bool)
        bought = first.counts > 0
        self.seen[torch.from_numpy(first.rows[bought]), torch.from_numpy(first.items[bought])] = (
            True
        )
        new_target = self.target & ~self.seen
        self.has_new = new_target.any(dim=1)
        self.new_target = new_target[self.has_new]
        self.models: dict[tuple[float, float, float], ItemItem] = {}

    def item_item(self, lam: float, tau_matrix: float, side_weight: float) -> ItemItem:
        key = (lam, tau_matrix, side_weight)
        if key not in self.models:
            settings = replace(
                self.config, ease_lambda=lam, tau_matrix_days=tau_matrix, side_weight=side_weight
            )
            self.models[key] = fit_item_item(self.before, settings, self.cut, self.side)
        return self.models[key]

    def scores(
        self, lam: float, tau_matrix: float, side_weight: float, tau: float, weights: BlendWeights
    ) -> torch.Tensor:
        with torch.no_grad():
            return score_batch(
                self.item_item(lam, tau_matrix, side_weight),
                weights,
                self.popularity,
                self.histories[tau].batch(self.users),
                self.cut,
                self.repurchase,
            )

    def recall_all(self, scores: torch.Tensor) -> float:
        return float(dense_recall_ndcg(scores, self.target, 20)[0].mean())

    def recall_new(self, scores: torch.Tensor) -> float:
        return self.recall_new_with_error(scores)[0]

    def recall_new_with_error(self, scores: torch.Tensor) -> tuple[float, float]:
        """Mean new-item Recall@20 over users and its standard error."""
        masked = scores[self.has_new].masked_fill(self.seen[self.has_new], -torch.inf)
        per_user = dense_recall_ndcg(masked, self.new_target, 20)[0].double()
        error = float(per_user.std()) / max(len(per_user), 1) ** 0.5 if len(per_user) > 1 else 0.0
        return float(per_user.mean()), error


#: A point of the new-item grid: lambda, tau_matrix, side_weight, tau_input, beta.
_Setting = tuple[float, float, float, float, float]


@dataclass(frozen=True)
class _Tuned:
    """What the validation windows chose (``_tune_blend``)."""

    ease_lambda: float
    tau_matrix_days: float
    side_weight: float
    tau_input_days: float
    weights: BlendWeights
    metrics: dict[str, float]


def _tune_blend(
    log: IndexedLog, end: float, config: TrainConfig, side: torch.Tensor | None, progress: bool
) -> _Tuned:
    """Choose EASE lambda, matrix recency weighting, the descriptions' weight, input decay and
    blend weights (validation).

    ``validation_windows`` consecutive windows of ``label_days`` each end at ``end``; a setting
    is judged by its mean over them (one season alone over-fits). The item-item part and the
    popularity weight are chosen on new-item Recall@20 (the repeat term cannot help there), then
    the repeat weight and decay on Recall@20 over all purchases. Scores of all validation users
    are held densely, so each grid point costs one top-k. Without descriptions (``side`` None)
    the descriptions' weight stays 0.
    """
    span = config.label_days * DAY
    windows = []
    for w in range(config.validation_windows):
        cut = end - span * (w + 1)
        if (log.times < cut).any():
            window = _ValidationWindow(log, cut, cut + span, config, side)
            if len(window.users) and bool(window.has_new.any()):
                windows.append(window)
    if not windows:
        raise ValueError("no purchases to validate on at the end of the training window")
    grid = [
        (lam, tau_matrix, 0.0, tau)
        for lam in config.ease_lambda_grid
        for tau_matrix in config.tau_matrix_grid
        for tau in config.tau_input_grid
    ]
    # The descriptions' weight is chosen after the rest of the item-item part, on its
    # settings: searched jointly, it moved lambda and the input decay to values that did
    # better on validation and worse on a later season (docs/recommendation.md).
    side_grid = [w for w in config.side_weight_grid if w > 0] if side is not None else []
    bar = tqdm(
        total=len(windows) * (len(grid) + len(side_grid) + 1),
        desc="tuning blend on validation windows",
        unit="step",
        disable=not progress,
    )
    # Keyed by (lambda, tau_matrix, side_weight, tau_input, beta).
    new_recall: dict[_Setting, float] = {}
    new_error: dict[_Setting, float] = {}

    def judge(settings: list[tuple[float, float, float, float]]) -> None:
        """Mean new-item recall (and its error) over the windows at each beta."""
        for window in windows:
            for setting in settings:
                base = window.scores(*setting, BlendWeights(alpha=0.0, beta=0.0))
                for beta in config.beta_grid:
                    value, error = window.recall_new_with_error(
                        base + beta * window.popularity.unsqueeze(0)
                    )
                    key = (*setting, beta)
                    new_recall[key] = new_recall.get(key, 0.0) + value / len(windows)
                    new_error[key] = new_error.get(key, 0.0) + (error / len(windows)) ** 2
                bar.update(1)
            window.models.clear()  # the dense EASE matrices are large: one window's at a time

    judge(grid)
    lam, tau_matrix, _, tau, _ = max(new_recall, key=lambda key: new_recall[key])
    judge([(lam, tau_matrix, side_weight, tau) for side_weight in side_grid])

    def best_beta(side_weight: float) -> float:
        return max(config.beta_grid, key=lambda b: new_recall[lam, tau_matrix, side_weight, tau, b])

    def within_one_error(values: list[float], key: Callable[[float], _Setting]) -> float:
        """The smallest value whose validation recall is within one standard error of the
        best value's (the one-standard-error rule)."""
        top = key(max(values, key=lambda v: new_recall[key(v)]))
        threshold = new_recall[top] - math.sqrt(new_error[top])
        return min(v for v in values if new_recall[key(v)] >= threshold)

    # One-standard-error rule on the descriptions' weight and then on the popularity weight:
    # the smallest weight whose validation recall is within one standard error of the best.
    # Popularity's gain on the validation windows (summer) does not carry over to a season
    # change; the descriptions' gain on new items costs recall over all purchases (they
    # compete with the shopper's own items for the top places). Within the error bar the
    # lighter, more personal ranking is the safer choice.
    side_weight = within_one_error(
        [0.0, *side_grid], lambda w: (lam, tau_matrix, w, tau, best_beta(w))
    )
    chosen = (lam, tau_matrix, side_weight, tau)
    beta = within_one_error(list(config.beta_grid), lambda b: (*chosen, b))
    all_recall: dict[BlendWeights, float] = {}
    for window in windows:
        base = window.scores(*chosen, BlendWeights(alpha=0.0, beta=beta))
        candidates = [BlendWeights(0.0, beta)]
        all_recall[candidates[0]] = all_recall.get(candidates[0], 0.0) + window.recall_all(
            base
        ) / len(windows)
        for tau_repeat in config.tau_repeat_grid:
            for power in config.repeat_rate_power_grid:
                repeat = window.scores(*chosen, BlendWeights(1.0, beta, tau_repeat, power)) - base
                for alpha in config.alpha_grid:
                    weights = BlendWeights(alpha, beta, tau_repeat, power)
                    value = window.recall_all(base + alpha * repeat)
                    all_recall[weights] = all_recall.get(weights, 0.0) + value / len(windows)
        bar.update(1)
    bar.close()
    weights = max(all_recall, key=lambda key: all_recall[key])
    metrics = {
        "validation_recall@20": round(all_recall[weights], 4),
        "validation_recall@20_new": round(new_recall[(*chosen, beta)], 4),
        "validation_windows": float(len(windows)),
        "validation_users": float(sum(len(w.users) for w in windows)),
    }
    return _Tuned(*chosen, weights, metrics)


def train(
    log: Interactions,
    *,
    train_until: float | None,
    config: TrainConfig,
    data_name: str,
    progress: bool = True,
) -> RecommenderModel:
    """Train a model on the events of ``log`` before ``train_until`` (all when ``None``)."""
    torch.set_num_threads(config.threads)
    started = time.monotonic()
    window = log.between(None, train_until) if train_until is not None else log
    if len(window) == 0:
        raise ValueError("no events in the training window")
    indexed, user_ids, item_ids = index_log(window)
    end = float(train_until if train_until is not None else window.times.max() + 1.0)
    cut = end - config.label_days * DAY
    if not (indexed.times < cut).any() or not (indexed.times >= cut).any():
        raise ValueError(
            f"the training window needs events both before and within its last "
            f"{config.label_days:g} days (the label window)"
        )
    # Only the dense model takes side information (a low-rank one ignores it).
    side = (
        description_similarity(item_ids, window.descriptions)
        if indexed.num_items <= config.max_dense_items
        else None
    )
    tuned = _tune_blend(indexed, end, config, side, progress)
    weights, metrics = tuned.weights, tuned.metrics
    config = replace(
        config,
        ease_lambda=tuned.ease_lambda,
        tau_input_days=tuned.tau_input_days,
        tau_matrix_days=tuned.tau_matrix_days,
        side_weight=tuned.side_weight,
    )
    history = build_history(indexed, end, config.tau_input_days)
    popularity = build_popularity(indexed, end)
    repurchase = repurchase_rates(indexed)
    item_item = fit_item_item(indexed, config, end, side)
    metrics["train_seconds"] = round(time.monotonic() - started, 1)
    trained_at = time.time()
    digest = hashlib.sha256()
    for tensor in item_item.state().values():
        digest.update(tensor.numpy().tobytes()[:1_000_000])
    digest.update(repr(weights).encode())
    stamp = datetime.fromtimestamp(trained_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    hyper = (
        {
            "ease_lambda": config.ease_lambda,
            "tau_input_days": config.tau_input_days,
            "tau_matrix_days": config.tau_matrix_days,
            # None: the log had no descriptions (or the model is low-rank), plain EASE.
            "side_weight": config.side_weight if side is not None else None,
            "label_days": config.label_days,
            "validation_windows": config.validation_windows,
            "max_dense_items": config.max_dense_items,
            "lowrank_rank": config.lowrank_rank,
        }
        | weights.as_dict()
        | config.extra
    )
    metadata = ModelMetadata(
        version=f"{stamp}-{digest.hexdigest()[:8]}",
        kind=f"ease+repeat+popularity blend ({item_item.kind})",
        trained_at=trained_at,
        reference_time=end,
        num_users=len(user_ids),
        num_items=len(item_ids),
        hyperparameters=hyper,
        metrics=metrics,
        data=data_name,
    )
    known = set(item_ids)
    descriptions = {k: v for k, v in window.descriptions.items() if k in known}
    return RecommenderModel(
        metadata,
        item_ids,
        user_ids,
        descriptions,
        history,
        popularity,
        item_item,
        weights,
        repurchase,
    )


def save_versioned(model: RecommenderModel, root: Path) -> Path:
    """Save under ``root/<version>`` and return that directory."""
    directory = root / model.metadata.version
    model.save(directory)
    return directory


def newest_model_dir(root: Path) -> Path | None:
    """The newest complete model directory under ``root`` (versions sort by time)."""
    if not root.is_dir():
        return None
    candidates = sorted(p for p in root.iterdir() if (p / "metadata.json").is_file())
    return candidates[-1] if candidates else None
