"""Settings of the recommendation service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.runtime.settings import setting


@dataclass(frozen=True)
class RecommendationOptions:
    model_dir: Path | None = setting(
        None, "model directory to serve; default: the newest under <data_dir>/models/recommendation"
    )
