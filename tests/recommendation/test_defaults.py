"""The default model trains from the sample shipped in the package, once per data directory."""

from __future__ import annotations

import json
from pathlib import Path

from services.recommendation.defaults import SAMPLE_PATH, ensure_default_model


def test_default_model_is_trained_from_the_shipped_sample_and_cached(tmp_path: Path) -> None:
    assert SAMPLE_PATH.is_file() and SAMPLE_PATH.stat().st_size < 2 * 1024 * 1024
    first = ensure_default_model(tmp_path, progress=False)
    assert first.parent == tmp_path / "models" / "recommendation"
    meta = json.loads((first / "metadata.json").read_text())
    assert meta["num_users"] > 500 and meta["num_items"] > 1000
    # The sample has descriptions, so their weight in EASE was tuned (None: none were read).
    assert meta["hyperparameters"]["side_weight"] in (0.0, 0.25, 0.5, 1.0)
    again = ensure_default_model(tmp_path, progress=False)
    assert again == first
    assert len(list(first.parent.iterdir())) == 1
