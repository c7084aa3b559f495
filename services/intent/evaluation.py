"""Evaluating a loaded model on labelled messages, with optional out-of-scope rows."""

from __future__ import annotations

import time

import numpy as np

from services.intent.data import LabeledTexts
from services.intent.inference import IntentModel
from services.intent.metrics import classification_metrics, oos_metrics


def evaluate(
    model: IntentModel, data: LabeledTexts, *, oos_label: str | None = None
) -> dict[str, float]:
    """Accuracy and macro-F1 on the in-scope rows; with ``oos_label``, also OOS recall,
    precision and in-scope accuracy at the model's calibrated threshold.

    Every label other than ``oos_label`` must be one the model knows: an unknown label means the
    wrong file or a missing ``--oos-label``, and raises ``ValueError`` naming it.
    """
    index = {label: i for i, label in enumerate(model.labels)}
    unknown = sorted({label for label in data.labels if label not in index and label != oos_label})
    if unknown:
        hint = "" if oos_label else "; pass --oos-label if they mark out-of-scope messages"
        raise ValueError(
            f"{len(unknown)} test labels unknown to the model, e.g. {unknown[:3]}{hint}"
        )
    started = time.perf_counter()
    probs = model.probabilities(data.texts)
    seconds = time.perf_counter() - started
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    is_oos = np.asarray([label == oos_label for label in data.labels], dtype=bool)
    targets = np.asarray([index.get(label, -1) for label in data.labels], dtype=np.int64)
    in_scope = ~is_oos
    closed = classification_metrics(targets[in_scope], predicted[in_scope], len(model.labels))
    report: dict[str, float] = {
        "accuracy": closed["accuracy"],
        "macro_f1": closed["macro_f1"],
        "examples": float(len(data)),
        "threshold": model.threshold,
        "temperature": model.temperature,
        "seconds": round(seconds, 2),
    }
    if oos_label is not None:
        flagged = confidence < model.threshold
        correct = predicted == targets
        report.update(oos_metrics(is_oos, flagged, correct))
    return report
