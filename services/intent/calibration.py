"""Confidence calibration (temperature scaling) and the out-of-scope threshold.

Both are fitted on a held-out validation split of in-scope messages only: the threshold is the
confidence below which the chosen fraction of *in-scope* validation messages would be rejected,
so no out-of-scope examples are needed (nor peeked at) to set it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def softmax(logits: NDArray[np.floating], temperature: float = 1.0) -> FloatArray:
    """Row-wise softmax of ``logits / temperature``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: NDArray[np.floating], targets: NDArray[np.integer], temperature: float) -> float:
    """Mean negative log-likelihood of ``targets`` under temperature-scaled ``logits``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(targets)), targets]))


def fit_temperature(
    logits: NDArray[np.floating],
    targets: NDArray[np.integer],
    *,
    low: float = 0.25,
    high: float = 20.0,
    iterations: int = 80,
) -> float:
    """The temperature in [low, high] minimising validation NLL (golden-section search on log T).

    NLL is convex in 1/T for a fixed set of logits, so a one-dimensional search finds the optimum.
    The lower bound matters when validation is perfectly separated: NLL then keeps falling as
    T -> 0, and an unbounded fit would turn every confidence into 0 or 1.
    """
    if len(targets) == 0:
        return 1.0
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(logits, targets, float(np.exp(c))), nll(logits, targets, float(np.exp(d)))
    for _ in range(iterations):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(logits, targets, float(np.exp(c)))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(logits, targets, float(np.exp(d)))
    return float(np.exp((a + b) / 2.0))


def expected_calibration_error(
    probabilities: NDArray[np.floating], targets: NDArray[np.integer], bins: int = 15
) -> float:
    """ECE of the top-1 confidence over equal-width bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        mask = (confidence > lo) & (confidence <= hi)
        if mask.any():
            total += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(total)


def pick_threshold(
    confidences: Sequence[float] | NDArray[np.floating], reject_rate: float
) -> float:
    """The confidence below which ``reject_rate`` of the given in-scope confidences fall.

    A message is out of scope when its confidence is strictly below the threshold.
    """
    if not 0.0 <= reject_rate < 1.0:
        raise ValueError("reject_rate must be in [0, 1)")
    values = np.sort(np.asarray(confidences, dtype=np.float64))
    if len(values) == 0 or reject_rate == 0.0:
        return 0.0
    k = int(np.floor(reject_rate * len(values)))
    # Midway between the k-th lowest confidence (rejected) and the next (kept).
    if k == 0:
        return float(values[0])
    return float((values[k - 1] + values[k]) / 2.0)
