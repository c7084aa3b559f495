"""Temperature scaling, threshold selection and metrics."""

from __future__ import annotations

import numpy as np
import pytest

from services.intent.calibration import (
    expected_calibration_error,
    fit_temperature,
    nll,
    pick_threshold,
    softmax,
)
from services.intent.metrics import classification_metrics, oos_metrics


def test_softmax_rows_sum_to_one_and_temperature_flattens() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    sharp = softmax(logits, 0.5)
    flat = softmax(logits, 4.0)
    assert np.allclose(sharp.sum(axis=1), 1.0)
    assert sharp.max() > flat.max()


def test_fit_temperature_recovers_overconfidence() -> None:
    rng = np.random.default_rng(0)
    n, k = 4000, 5
    true_logits = rng.normal(size=(n, k)) * 2.0
    probs = softmax(true_logits)
    targets = np.array([rng.choice(k, p=row) for row in probs])
    # A model three times too confident: the fitted temperature should undo it.
    t = fit_temperature(true_logits * 3.0, targets)
    assert 2.6 < t < 3.4
    assert nll(true_logits * 3.0, targets, t) < nll(true_logits * 3.0, targets, 1.0)


def test_fit_temperature_is_bounded_on_perfect_validation() -> None:
    logits = np.array([[5.0, 0.0], [0.0, 5.0]])
    assert fit_temperature(logits, np.array([0, 1])) == pytest.approx(0.25, rel=0.01)


def test_pick_threshold_rejects_the_requested_share() -> None:
    confidences = np.linspace(0.01, 1.0, 100)
    threshold = pick_threshold(confidences, 0.05)
    assert (confidences < threshold).sum() == 5
    assert pick_threshold(confidences, 0.0) == 0.0
    with pytest.raises(ValueError):
        pick_threshold(confidences, 1.0)


def test_ece_is_zero_for_perfectly_calibrated_bins() -> None:
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, np.array([0, 1])) == 0.0
    assert expected_calibration_error(probs, np.array([1, 0])) == pytest.approx(1.0)


def test_classification_metrics_macro_f1() -> None:
    targets = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 2])
    m = classification_metrics(targets, predicted, 3)
    assert m["accuracy"] == pytest.approx(0.8)
    # F1: class0 2/3, class1 0.8, class2 1.0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)


def test_oos_metrics_follow_the_clinc_convention() -> None:
    is_oos = np.array([True, True, False, False, False, False])
    flagged = np.array([True, False, True, False, False, False])
    correct = np.array([False, False, True, True, False, True])
    m = oos_metrics(is_oos, flagged, correct)
    assert m["oos_recall"] == pytest.approx(0.5)
    assert m["oos_precision"] == pytest.approx(0.5)
    # In scope: row 2 flagged (wrong), row 3 right, row 4 misclassified, row 5 right.
    assert m["in_scope_accuracy"] == pytest.approx(0.5)
    assert m["in_scope_false_oos_rate"] == pytest.approx(0.25)
