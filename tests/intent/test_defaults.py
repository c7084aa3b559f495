"""The default model: built once from Bitext-format data, then reused from the cache."""

from __future__ import annotations

import csv
import dataclasses
import gzip
from pathlib import Path

from services.intent.defaults import DEFAULT_VERSION, ensure_default_model
from services.intent.inference import IntentModel
from tests.intent.conftest import TINY_CONFIG, tiny_dataset


def test_default_model_is_trained_once_and_cached(tmp_path: Path) -> None:
    # A Bitext-layout slice (instruction,intent,response) standing in for the shipped sample.
    data = tiny_dataset()
    sample = tmp_path / "sample.csv.gz"
    with gzip.open(sample, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "intent", "response"])
        for text, label in zip(data.texts, data.labels, strict=True):
            writer.writerow([text, label, f"Reply for {label}."])
    config = dataclasses.replace(TINY_CONFIG, epochs=1, save_torch_state=False)
    logs: list[str] = []
    first = ensure_default_model(
        tmp_path / "dd", progress=False, log=logs.append, data_path=sample, config=config
    )
    assert first == tmp_path / "dd" / "models" / "intent" / DEFAULT_VERSION
    model = IntentModel(first)
    assert model.version == DEFAULT_VERSION
    assert model.templates["get_refund"] == "Reply for get_refund."
    stamp = (first / "meta.json").stat().st_mtime_ns
    n_logs = len(logs)
    again = ensure_default_model(
        tmp_path / "dd", progress=False, log=logs.append, data_path=sample, config=config
    )
    assert again == first
    assert (first / "meta.json").stat().st_mtime_ns == stamp  # not retrained
    assert len(logs) == n_logs
