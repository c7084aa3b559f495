"""Classification metrics (accuracy, macro-F1) and out-of-scope metrics."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def classification_metrics(
    targets: NDArray[np.integer], predictions: NDArray[np.integer], n_labels: int
) -> dict[str, float]:
    """Accuracy and macro-F1 over the labels that occur in ``targets`` or ``predictions``."""
    targets = np.asarray(targets)
    predictions = np.asarray(predictions)
    if len(targets) == 0:
        return {"accuracy": 0.0, "macro_f1": 0.0, "count": 0.0}
    accuracy = float((targets == predictions).mean())
    f1s: list[float] = []
    for label in range(n_labels):
        tp = int(((predictions == label) & (targets == label)).sum())
        fp = int(((predictions == label) & (targets != label)).sum())
        fn = int(((predictions != label) & (targets == label)).sum())
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": accuracy, "macro_f1": float(np.mean(f1s)), "count": float(len(targets))}


def oos_metrics(
    is_oos: NDArray[np.bool_],
    flagged: NDArray[np.bool_],
    correct: NDArray[np.bool_],
) -> dict[str, float]:
    """Out-of-scope recall/precision and in-scope accuracy at a threshold.

    ``is_oos``: the message is truly out of scope; ``flagged``: the model said out of scope;
    ``correct``: the top intent equals the true one (meaningless for OOS rows). In-scope accuracy
    counts an in-scope message as right only when it is both correctly classified and not
    flagged (the CLINC150 convention).
    """
    is_oos = np.asarray(is_oos, dtype=bool)
    flagged = np.asarray(flagged, dtype=bool)
    correct = np.asarray(correct, dtype=bool)
    in_scope = ~is_oos
    n_oos, n_in = int(is_oos.sum()), int(in_scope.sum())
    n_flagged = int(flagged.sum())
    return {
        "oos_count": float(n_oos),
        "in_scope_count": float(n_in),
        "oos_recall": float((flagged & is_oos).sum() / n_oos) if n_oos else 0.0,
        "oos_precision": float((flagged & is_oos).sum() / n_flagged) if n_flagged else 0.0,
        "in_scope_accuracy": float((correct & ~flagged & in_scope).sum() / n_in) if n_in else 0.0,
        "in_scope_false_oos_rate": float((flagged & in_scope).sum() / n_in) if n_in else 0.0,
    }
