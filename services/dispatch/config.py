"""Settings of the dispatch service."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import setting


@dataclass(frozen=True)
class DispatchOptions:
    telemetry_target: str = setting(
        "127.0.0.1:50054", "telemetry service address whose live stream moves vehicles; '' disables"
    )
