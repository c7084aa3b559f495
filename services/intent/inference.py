"""Serving-time inference: ONNX Runtime over the exported model with the fast tokenizer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from services.intent.calibration import softmax
from services.intent.encoder import load_tokenizer

META_FILE = "meta.json"
TEMPLATES_FILE = "templates.json"


class ModelFormatError(ValueError):
    """A model directory that is missing files or has an unreadable ``meta.json``."""


def _pad(ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(x) for x in ids)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return input_ids, mask


class OnnxClassifier:
    """Texts -> raw logits through an ONNX graph (input_ids, attention_mask -> logits)."""

    def __init__(self, onnx_path: Path, tokenizer: Tokenizer, *, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = tokenizer

    def logits(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Logits for ``texts`` in order; batches are length-sorted to keep padding small."""
        if not texts:
            raise ValueError("no texts")
        ids = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        chunks = []
        for start in range(0, len(order), batch_size):
            sel = order[start : start + batch_size]
            input_ids, mask = _pad([ids[i] for i in sel])
            chunks.append(
                self._session.run(["logits"], {"input_ids": input_ids, "attention_mask": mask})[0]
            )
        stacked = np.concatenate(chunks)
        result = np.empty_like(stacked)
        result[np.asarray(order)] = stacked
        return result


@dataclass(frozen=True)
class Prediction:
    """Calibrated intent probabilities of one message."""

    probabilities: np.ndarray  # over ``IntentModel.labels``
    out_of_scope: bool

    def top(self, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable (label, probability) pairs, best first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(labels[i], float(self.probabilities[i])) for i in order]


class IntentModel:
    """A trained model directory loaded for inference."""

    def __init__(self, model_dir: Path, *, variant: str | None = None, threads: int = 1) -> None:
        meta_path = model_dir / META_FILE
        try:
            meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelFormatError(f"{meta_path}: missing (not a trained intent model)") from None
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"{meta_path}: invalid JSON: {exc}") from None
        self.model_dir = model_dir
        self.meta = meta
        self.version: str = meta["version"]
        self.kind: str = meta["kind"]
        self.labels: list[str] = list(meta["labels"])
        self.temperature: float = float(meta["temperature"])
        self.threshold: float = float(meta["oos_threshold"])
        self.metrics: dict[str, float] = {k: float(v) for k, v in meta.get("metrics", {}).items()}
        self.variant: str = variant or meta["variant"]
        if self.variant not in meta["files"]:
            raise ModelFormatError(f"unknown model variant {self.variant!r}")
        onnx_path = model_dir / meta["files"][self.variant]
        if not onnx_path.is_file():
            raise ModelFormatError(f"{onnx_path}: missing")
        templates_path = model_dir / TEMPLATES_FILE
        self.templates: dict[str, str] = (
            json.loads(templates_path.read_text(encoding="utf-8"))
            if templates_path.is_file()
            else {}
        )
        tokenizer = load_tokenizer(model_dir / meta["files"]["tokenizer"], int(meta["max_length"]))
        self._classifier = OnnxClassifier(onnx_path, tokenizer, threads=threads)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Uncalibrated logits of ``texts``."""
        return self._classifier.logits(texts)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Temperature-calibrated probabilities of ``texts`` (rows) over ``labels``."""
        return softmax(self.logits(texts), self.temperature)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Calibrated predictions, with the out-of-scope flag at the model's threshold."""
        probs = self.probabilities(texts)
        return [Prediction(row, bool(row.max() < self.threshold)) for row in probs]


def resolve_model_dir(path: Path) -> Path | None:
    """``path`` itself when it holds a model, else its newest versioned child, else None."""
    if (path / META_FILE).is_file():
        return path
    if not path.is_dir():
        return None
    candidates = sorted(
        (p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    for candidate in reversed(candidates):
        if (candidate / META_FILE).is_file():
            return candidate
    return None
