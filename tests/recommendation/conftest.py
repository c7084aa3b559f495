"""A tiny generated interaction log and a model trained on it (no external data)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from services.recommendation.data import read_interactions
from services.recommendation.model import RecommenderModel
from services.recommendation.train import TrainConfig, save_versioned, train

START = datetime(2011, 1, 1, tzinfo=UTC)
DAYS = 120
NUM_USERS = 60
CLUSTERS = 4
ITEMS_PER_CLUSTER = 10

#: Small grids so training takes a second.
FAST_CONFIG = TrainConfig(
    label_days=30.0,
    ease_lambda_grid=(5.0, 20.0),
    tau_input_grid=(60.0,),
    tau_matrix_grid=(60.0, 1e6),
    beta_grid=(0.0, 0.1),
    alpha_grid=(1.0,),
    tau_repeat_grid=(365.0,),
)


def item_id(cluster: int, index: int) -> str:
    return f"{cluster}{index:04d}"


def write_log(path: Path, seed: int = 0) -> Path:
    """Users buy mostly from their own cluster of items, some items repeatedly."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "timestamp", "event_type", "quantity"])
        for user in range(NUM_USERS):
            cluster = user % CLUSTERS
            favourites = rng.choice(ITEMS_PER_CLUSTER, size=3, replace=False)
            for _ in range(int(rng.integers(8, 16))):
                day = float(rng.uniform(0, DAYS))
                if rng.random() < 0.5:
                    index = int(rng.choice(favourites))
                else:
                    index = int(rng.integers(ITEMS_PER_CLUSTER))
                # Some noise across clusters.
                noisy = rng.random() < 0.1
                cluster_of_item = int(rng.integers(CLUSTERS)) if noisy else cluster
                when = START + timedelta(days=day)
                writer.writerow(
                    [f"u{user}", item_id(cluster_of_item, index), when.isoformat(), "purchase", 1]
                )
    return path


@pytest.fixture(scope="session")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_log(tmp_path_factory.mktemp("log") / "events.csv")


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory, log_path: Path) -> Path:
    root = tmp_path_factory.mktemp("models")
    model = train(
        read_interactions(log_path),
        train_until=None,
        config=FAST_CONFIG,
        data_name="fixture",
        progress=False,
    )
    save_versioned(model, root)
    return root


@pytest.fixture(scope="session")
def model_dir(model_root: Path) -> Path:
    return next(p for p in model_root.iterdir() if (p / "metadata.json").is_file())


@pytest.fixture(scope="session")
def model(model_dir: Path) -> RecommenderModel:
    return RecommenderModel.load(model_dir)
