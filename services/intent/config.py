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
    model_variant: str = setting(
        "",
        "ONNX graph to serve: int8, fp32, or '' for the one chosen at training",
        choices=("", "int8", "fp32"),
    )
    inference_threads: int = setting(
        1, "ONNX Runtime intra-op threads per inference batch", low=1, high=64
    )
    max_batch: int = setting(
        32, "most messages one inference batch takes from concurrent requests", low=1, high=1024
    )
    dispatch_target: str = setting(
        "127.0.0.1:50053", "dispatch service address for order-status look-ups; '' disables"
    )
    dispatch_timeout_s: float = setting(
        1.0, "deadline of one order-status look-up, retries included", low=0.01, high=60
    )
    dispatch_attempts: int = setting(
        3, "attempts per order-status look-up on UNAVAILABLE", low=1, high=10
    )
