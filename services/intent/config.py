"""Settings of the intent service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.runtime.settings import setting


@dataclass(frozen=True)
class IntentOptions:
    model_dir: Path | None = setting(
        None, "model directory to serve; default: the newest under <data_dir>/models/intent"
    )
    dispatch_target: str = setting(
        "127.0.0.1:50053", "dispatch service address for order-status look-ups"
    )
