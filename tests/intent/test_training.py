"""Training on a tiny fixture: the model directory, calibration outputs and served predictions."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest

from services.intent.data import LabeledTexts, stratified_split
from services.intent.evaluation import evaluate
from services.intent.inference import IntentModel, resolve_model_dir
from services.intent.training import length_bucketed_batches, train_intent_model
from tests.intent.conftest import FIXTURE_INTENTS, TINY_CONFIG, tiny_dataset


def test_model_dir_holds_calibrated_onnx_model(tiny_model_dir: Path) -> None:
    meta = json.loads((tiny_model_dir / "meta.json").read_text())
    assert meta["version"] == "tiny-v1"
    assert meta["labels"] == sorted(FIXTURE_INTENTS)
    assert meta["variant"] in ("int8", "fp32")
    for name in ("model.onnx", "model.int8.onnx", "tokenizer.json", "metrics.json"):
        assert (tiny_model_dir / name).is_file()
    assert 0.25 <= meta["temperature"] <= 20.0
    assert 0.0 < meta["oos_threshold"] <= 0.9  # capped: the tiny validation set is separable
    assert meta["metrics"]["val_accuracy"] >= 0.8
    assert json.loads((tiny_model_dir / "templates.json").read_text()) == {
        "get_refund": "I can help with your refund for {{Order Number}}."
    }


def test_served_model_classifies_unseen_messages(tiny_model_dir: Path) -> None:
    model = IntentModel(tiny_model_dir)
    probs = model.probabilities(
        ["where is my order 113542617735902?", "I want my money back for this", "I need a human"]
    )
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    predicted = [model.labels[i] for i in probs.argmax(axis=1)]
    assert predicted == ["track_order", "get_refund", "contact_human_agent"]


def test_int8_and_fp32_graphs_agree(tiny_model_dir: Path) -> None:
    texts = tiny_dataset().texts[:40]
    fp32 = IntentModel(tiny_model_dir, variant="fp32").probabilities(texts).argmax(axis=1)
    int8 = IntentModel(tiny_model_dir, variant="int8").probabilities(texts).argmax(axis=1)
    assert (fp32 == int8).mean() >= 0.9


def test_evaluate_reports_oos_metrics(tiny_model_dir: Path) -> None:
    model = IntentModel(tiny_model_dir)
    data = LabeledTexts(
        ["where is my package 12345678", "what's the capital of Peru?", "hire a plumber"],
        ["track_order", "oos", "oos"],
    )
    report = evaluate(model, data, oos_label="oos")
    assert report["accuracy"] == 1.0
    assert report["oos_count"] == 2.0
    assert 0.0 <= report["oos_recall"] <= 1.0


def test_resolve_model_dir_picks_newest_version(tiny_model_dir: Path) -> None:
    assert resolve_model_dir(tiny_model_dir) == tiny_model_dir
    assert resolve_model_dir(tiny_model_dir.parent) == tiny_model_dir
    assert resolve_model_dir(tiny_model_dir / "nothing") is None


def test_stratified_split_keeps_every_label_in_training() -> None:
    data = LabeledTexts([f"t{i}" for i in range(30)], ["a"] * 20 + ["b"] * 9 + ["c"])
    train, held = stratified_split(data, 0.2, seed=1)
    assert len(train) + len(held) == 30
    assert set(train.labels) == {"a", "b", "c"}
    assert held.labels.count("a") == 4 and "c" not in held.labels
    assert stratified_split(data, 0.2, seed=1) == (train, held)


def test_length_buckets_cover_every_index_once_and_group_lengths() -> None:
    lengths = [random.Random(0).randint(1, 60) for _ in range(500)]
    batches = length_bucketed_batches(lengths, 16, random.Random(1), pool=50)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500))
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    assert spread < 10  # random batches of 16 would spread over ~50 tokens


def test_training_continues_from_a_saved_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = dataclasses.replace(TINY_CONFIG, epochs=1, max_steps=2, save_torch_state=False)
    result = train_intent_model(
        tiny_dataset(),
        tmp_path,
        config,
        version="tiny-v2",
        progress=False,
        log=lambda _m: None,
        init_from=tiny_model_dir,
    )
    meta = json.loads((result.model_dir / "meta.json").read_text())
    assert meta["init_from"] == str(tiny_model_dir)
    assert not (result.model_dir / "torch_state.pt").exists()
    # Two tiny steps at a low rate barely move a trained model: it still knows its intents.
    model = IntentModel(result.model_dir)
    assert model.labels[int(model.probabilities(["where is my order 123456789?"]).argmax())] == (
        "track_order"
    )
    other = LabeledTexts(["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="other labels"):
        train_intent_model(other, tmp_path, config, progress=False, init_from=tiny_model_dir)


def test_int8_holds_refuses_int8_only_when_validation_shows_it_is_worse() -> None:
    import numpy as np

    from services.intent.training import int8_holds

    fp32 = np.ones(600, dtype=bool)
    fp32[:40] = False
    # Drop within the tolerance.
    int8 = fp32.copy()
    int8[100:102] = False
    assert int8_holds(fp32, int8, max_drop=0.005)
    # 6 lost, 2 gained: a 0.67-point drop, but P(>= 6 of 8 | fair) = 0.145 is not significant.
    int8 = fp32.copy()
    int8[100:106] = False
    int8[:2] = True
    assert int8_holds(fp32, int8, max_drop=0.005)
    # 12 lost, none gained: P = 1/4096, int8 is worse.
    int8 = fp32.copy()
    int8[100:112] = False
    assert not int8_holds(fp32, int8, max_drop=0.005)
    assert int8_holds(fp32[:0], int8[:0], max_drop=0.005)
    # A large validation set with thousands of disagreements (2.0**n would overflow).
    big_fp32 = np.arange(20_000) % 2 == 0
    big_int8 = ~big_fp32
    big_int8[1:3000:2] = False  # 1,500 fewer right answers: 7.5 points, clearly worse
    assert not int8_holds(big_fp32, big_int8, max_drop=0.005)
