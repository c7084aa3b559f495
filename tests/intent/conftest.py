"""A tiny intent model trained once per test session from the Bitext sample shipped in the
package (four intents, a few epochs of the top layer): real training, real ONNX export."""

from __future__ import annotations

import csv
import gzip
import io
import random
from pathlib import Path

import pytest

from services.intent.data import LabeledTexts, write_labeled_csv
from services.intent.defaults import DEFAULT_DATA
from services.intent.training import TrainConfig, train_intent_model

FIXTURE_INTENTS = ("track_order", "get_refund", "contact_human_agent", "create_account")
PER_INTENT = 30

TINY_CONFIG = TrainConfig(
    epochs=2,
    batch_size=16,
    head_lr=1e-2,
    frozen_layers=5,
    max_length=32,
    val_fraction=0.2,
    threads=2,
    seed=3,
    save_torch_state=True,
)


def tiny_dataset() -> LabeledTexts:
    """PER_INTENT distinct shipped Bitext messages for each of FIXTURE_INTENTS (seeded)."""
    with gzip.open(DEFAULT_DATA, "rt", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    rng = random.Random(7)
    texts: list[str] = []
    labels: list[str] = []
    for intent in FIXTURE_INTENTS:
        pool = sorted({r["instruction"] for r in rows if r["intent"] == intent})
        for text in rng.sample(pool, PER_INTENT):
            texts.append(text)
            labels.append(intent)
    return LabeledTexts(texts, labels)


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("intent-data") / "tiny.csv"
    write_labeled_csv(path, tiny_dataset())
    return path


def build_tiny_model(root: Path) -> Path:
    """Train the tiny model into ``root/tiny-v1`` unless it is already there (one training per
    test session, shared by the intent and end-to-end tests)."""
    model_dir = root / "tiny-v1"
    if (model_dir / "meta.json").is_file():
        return model_dir
    templates = {"get_refund": "I can help with your refund for {{Order Number}}."}
    result = train_intent_model(
        tiny_dataset(),
        root,
        TINY_CONFIG,
        version="tiny-v1",
        progress=False,
        log=lambda _msg: None,
        templates=templates,
    )
    return result.model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained, calibrated, exported model directory (session-wide: training is the slow part)."""
    return build_tiny_model(tmp_path_factory.getbasetemp() / "intent-tiny-model")
