"""Settings of the telemetry service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.runtime.settings import setting


@dataclass(frozen=True)
class TelemetryOptions:
    database: Path | None = setting(
        None, "SQLite database file; default: <data_dir>/telemetry.sqlite3"
    )
