"""The exact block top-k used in serving and the recency-weighted EASE training matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from services.recommendation.features import DAY
from services.recommendation.model import top_k_rows
from services.recommendation.train import IndexedLog, interaction_matrix_cells


@pytest.mark.parametrize(("width", "k"), [(10_000, 20), (10_007, 5), (1_000, 100), (300, 1)])
def test_block_top_k_equals_full_top_k(width: int, k: int) -> None:
    generator = torch.Generator().manual_seed(width + k)
    scores = torch.randn(7, width, generator=generator)
    # Banned items (-inf) and a row whose winners all sit in one block and in the tail.
    scores[0, :50] = -math.inf
    scores[1, 128:148] += 100.0
    scores[2, -3:] += 100.0
    values, indices = top_k_rows(scores, k)
    expected_values, expected_indices = torch.topk(scores, k, dim=1)
    assert torch.equal(values, expected_values)
    assert torch.equal(indices, expected_indices)


def test_block_top_k_handles_rows_that_are_all_banned() -> None:
    scores = torch.full((2, 5_000), -math.inf)
    scores[1, 4_321] = 1.0
    values, indices = top_k_rows(scores, 3)
    assert values.shape == (2, 3)
    assert int(indices[1, 0]) == 4_321
    assert bool(torch.isinf(values[0]).all())


def test_matrix_cells_decay_with_the_last_purchase() -> None:
    now = 1_000 * DAY
    log = IndexedLog(
        users=np.asarray([0, 0, 0, 1]),
        items=np.asarray([0, 0, 1, 1]),
        times=np.asarray([now - 300 * DAY, now - 10 * DAY, now - 100 * DAY, now]),
        event_types=np.asarray([4, 4, 4, 4]),
        num_users=2,
        num_items=2,
    )
    keys, values = interaction_matrix_cells(log, now, 100.0)
    cells = dict(zip(keys.tolist(), values.tolist(), strict=True))
    # (user 0, item 0): the latest of its two purchases counts, 10 days old.
    assert cells[0] == pytest.approx(math.exp(-0.1))
    assert cells[1] == pytest.approx(math.exp(-1.0))
    assert cells[3] == pytest.approx(1.0)
    _, binary = interaction_matrix_cells(log, now, math.inf)
    assert binary.tolist() == [1.0, 1.0, 1.0]
