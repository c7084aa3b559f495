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
    model_root: Path | None = setting(
        None,
        "where ReloadModel looks for the newest model; default: <data_dir>/models/recommendation",
    )
    feedback_db: Path | None = setting(
        None, "SQLite feedback event log; default: <data_dir>/recommendation/feedback.db"
    )
    batch_window_ms: float = setting(
        4.0,
        "under load (the previous batch had more than one call), how long a Recommend call "
        "may wait for the next batch to grow to the previous one's size; 0 sends whatever "
        "arrived while the previous batch was ranked",
        low=0,
        high=50,
    )
    max_batch: int = setting(64, "most Recommend calls ranked in one batch", low=1, high=1024)
    ranking_process: bool = setting(
        True,
        "rank in a child process (its own core and GIL); off: in a thread of the server",
    )
    torch_threads: int = setting(
        1, "threads torch may use for ranking (the event loop needs a core too)", low=1, high=64
    )
