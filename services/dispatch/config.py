"""Settings of the dispatch service."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import setting


@dataclass(frozen=True)
class DispatchOptions:
    telemetry_target: str = setting(
        "127.0.0.1:50054", "telemetry service address whose live stream moves vehicles; '' disables"
    )
    telemetry_fleet_id: str = setting(
        "", "fleet_id to filter the telemetry live stream by; '' takes every device"
    )
    db_path: str = setting("", "SQLite file of the live plan; '' means <data-dir>/dispatch.sqlite3")
    sqlite_synchronous: str = setting(
        "FULL",
        "SQLite synchronous mode: FULL survives power loss, NORMAL only a process crash",
        choices=("FULL", "NORMAL"),
    )
    reopt_time_limit_s: float = setting(
        1.0, "seconds of solver search per background re-optimisation pass", low=0.05, high=600
    )
    reopt_interval_s: float = setting(
        2.0,
        "shortest pause between two background passes (a window at risk starts one at once)",
        low=0,
        high=3600,
    )
    background_reopt: bool = setting(
        True, "run background re-optimisation passes (off only for baselines and debugging)"
    )
    solver_executor: str = setting(
        "process",
        "where the solver runs: a spawned process (keeps RPCs fast) or a thread",
        choices=("process", "thread"),
    )
    solver_niceness: int = setting(
        10,
        "how much lower the background solver process's CPU priority is (RPCs first)",
        low=0,
        high=19,
    )
    plan_workers: int = setting(
        1, "processes solving stateless Plan requests side by side", low=1, high=64
    )
    seed: int = setting(0, "seed of the background re-optimisation's search", low=0)
