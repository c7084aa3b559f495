"""Shared fixtures of the dispatch tests (small files under tests/fixtures/dispatch)."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dispatch"


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
