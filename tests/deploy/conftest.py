"""`shoptwin` run in-process configures logging on the stream of the moment (pytest's capture);
re-point it at the real stderr after each test so later tests do not log to a closed file."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import pytest

from services.runtime.logging import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    with contextlib.redirect_stderr(sys.__stderr__):
        configure_logging("info", "console")
