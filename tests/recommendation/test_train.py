"""Training on the generated fixture, the model directory and offline evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from services.recommendation.data import parse_date, read_interactions
from services.recommendation.evaluate import evaluate
from services.recommendation.model import RecommenderModel, score_batch
from services.recommendation.train import newest_model_dir, train

from .conftest import CLUSTERS, FAST_CONFIG, NUM_USERS


def test_model_directory_is_complete_and_versioned(model_dir: Path) -> None:
    names = {p.name for p in model_dir.iterdir()}
    assert {"metadata.json", "weights.pt", "items.json", "users.json", "history.npz"} <= names
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["version"] == model_dir.name
    assert meta["num_users"] == NUM_USERS
    assert 0.0 <= meta["metrics"]["validation_recall@20"] <= 1.0
    assert meta["hyperparameters"]["ease_lambda"] in FAST_CONFIG.ease_lambda_grid
    # An event log has no descriptions: plain EASE, and the metadata says so.
    assert meta["hyperparameters"]["side_weight"] is None
    assert newest_model_dir(model_dir.parent) == model_dir


def test_recommendations_follow_the_users_cluster(model: RecommenderModel) -> None:
    users = np.arange(len(model.user_ids))
    popularity = torch.from_numpy(model.popularity.blend(model.metadata.reference_time))
    with torch.no_grad():
        scores = score_batch(
            model.item_item,
            model.weights,
            popularity,
            model.history.batch(users),
            model.metadata.reference_time,
        )
    top = torch.topk(scores, 5, dim=1).indices
    in_cluster = 0
    for row, user_id in enumerate(model.user_ids):
        cluster = str(int(user_id[1:]) % CLUSTERS)
        in_cluster += sum(model.item_ids[i].startswith(cluster) for i in top[row].tolist())
    # Mostly the user's own cluster (random would be 1 in CLUSTERS).
    assert in_cluster / (5 * len(model.user_ids)) > 0.7


def test_save_and_load_give_the_same_scores(model: RecommenderModel, tmp_path: Path) -> None:
    model.save(tmp_path / "copy")
    again = RecommenderModel.load(tmp_path / "copy")
    users = np.arange(5)
    now = model.metadata.reference_time
    pop = torch.from_numpy(model.popularity.blend(now))
    a = score_batch(
        model.item_item, model.weights, pop, model.history.batch(users), now, model.repurchase
    )
    b = score_batch(
        again.item_item, again.weights, pop, again.history.batch(users), now, again.repurchase
    )
    assert torch.allclose(a, b)
    assert again.item_ids == model.item_ids
    assert model.repurchase is not None and again.repurchase is not None
    assert np.array_equal(again.repurchase, model.repurchase)
    assert again.weights == model.weights


def test_evaluation_reports_model_and_three_baselines(log_path: Path) -> None:
    log = read_interactions(log_path)
    until = parse_date("2011-03-20")
    held_out = train(
        log, train_until=until, config=FAST_CONFIG, data_name="fixture", progress=False
    )
    rows = evaluate(held_out, log, test_from=until, test_until=parse_date("2011-05-01"), k=5)
    names = [r.model for r in rows]
    assert names[:3] == ["popularity (30 d)", "repeat-buy", "EASE (lambda 300)"]
    assert names[3].startswith("shoptwin")
    for row in rows:
        assert 0.0 <= row.recall_all <= 1.0 and 0.0 <= row.recall_new <= 1.0
        assert row.users_all > 0
    # On clustered data the personalised model must beat global popularity.
    assert rows[3].recall_all > rows[0].recall_all
