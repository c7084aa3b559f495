"""Settings of the telemetry service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.runtime.settings import SettingsError, setting

DAY_S = 86_400.0


@dataclass(frozen=True)
class TelemetryOptions:
    database: Path | None = setting(
        None, "SQLite database file; default: <data_dir>/telemetry.sqlite3"
    )
    synchronous: str = setting(
        "normal",
        "SQLite synchronous mode: 'normal' survives a killed process (kill -9) but may lose the "
        "last commits on power loss; 'full' fsyncs every commit and survives power loss",
        choices=("normal", "full"),
    )
    reorder_window: int = setting(
        65_536,
        "sequence numbers a device may run ahead of its acknowledged sequence (out-of-order "
        "readings inside it are accepted); a resend this far behind it is rejected",
        low=16,
        high=10_000_000,
    )
    max_queued_readings: int = setting(
        200_000,
        "readings waiting for the writer before Upload stops reading its stream (backpressure)",
        low=1_000,
        high=10_000_000,
    )
    max_commit_readings: int = setting(
        50_000,
        "most readings the writer commits in one transaction (group commit across streams)",
        low=1,
        high=1_000_000,
    )
    raw_retention_s: float = setting(
        7 * DAY_S,
        "raw readings older than this many seconds are downsampled (if enabled) and deleted; "
        "0 keeps them forever",
        low=0,
    )
    downsample_resolution_s: float = setting(
        60.0,
        "bucket width in seconds that raw readings are folded into before retention deletes "
        "them; 0 deletes them without downsampling",
        low=0,
        high=DAY_S,
    )
    bucket_retention_s: float = setting(
        365 * DAY_S, "downsampled buckets older than this many seconds are deleted; 0 keeps", low=0
    )
    maintenance_interval_s: float = setting(
        60.0, "seconds between retention and downsampling passes", low=0.1, high=DAY_S
    )
    rules_file: Path | None = setting(
        None, "YAML file of alert rules; default: the rules shipped with the service"
    )
    alerts_enabled: bool = setting(True, "evaluate alert rules on stored readings")
    silence_check_interval_s: float = setting(
        5.0, "seconds between checks for silent devices", low=0.05, high=3_600
    )
    live_queue_size: int = setting(
        10_000,
        "readings buffered per WatchLive/WatchAlerts subscriber; a slow subscriber loses the "
        "oldest ones beyond this",
        low=1,
        high=10_000_000,
    )

    def validate(self) -> None:
        if (
            self.raw_retention_s
            and self.downsample_resolution_s
            and self.downsample_resolution_s > self.raw_retention_s
        ):
            raise SettingsError("downsample_resolution_s: must not exceed raw_retention_s")
        if self.rules_file is not None:
            if not self.rules_file.is_file():
                raise SettingsError(f"rules_file: file not found: {self.rules_file}")
            from services.telemetry.alerts import load_rules

            load_rules(self.rules_file)  # a bad rule is reported at start-up, by name
