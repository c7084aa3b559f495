"""Everything one load-test run needs, passed from ``shoptwin loadtest`` to every Locust
process (master and workers) as one JSON option, ``--shoptwin-options``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

#: The workloads a run can drive (closed loop: the user classes; open loop: what one arrival
#: does). ``suite`` mixes shopper journeys, fleets and per-service traffic.
WORKLOADS: tuple[str, ...] = (
    "echo",
    "recommendation",
    "intent",
    "dispatch",
    "telemetry",
    "journey",
    "fleet",
    "suite",
)

#: Services each workload calls.
WORKLOAD_SERVICES: dict[str, tuple[str, ...]] = {
    "echo": ("echo",),
    "recommendation": ("recommendation",),
    "intent": ("intent",),
    "dispatch": ("dispatch",),
    "telemetry": ("telemetry",),
    "journey": ("recommendation", "intent", "dispatch"),
    "fleet": ("dispatch", "telemetry"),
    "suite": ("recommendation", "intent", "dispatch", "telemetry"),
}


@dataclass(frozen=True)
class LoadTestOptions:
    """One run's settings, the same in every Locust process."""

    #: Service name -> ``host:port``.
    targets: dict[str, str] = field(default_factory=dict)
    workload: str = "echo"
    #: ``constant``, ``steps``, ``daily``, ``spike`` (open loop) or ``closed``.
    shape: str = "constant"
    #: Arrivals per second (open loop): the constant rate, the last step, the peak of a curve.
    rate: float = 10.0
    #: Concurrent users (closed loop).
    users: int = 10
    spawn_rate: float = 100.0
    duration_s: float = 60.0
    steps: int = 4
    #: Simulator scenario whose demand curve or spike the ``daily`` and ``spike`` shapes follow.
    scenario: str = ""
    seed: int = 0
    #: Arrival lanes: one arrival generator per Locust worker process, each with rate / lanes.
    lanes: int = 1
    #: Arrivals in flight per lane above which new ones are dropped (reported as failures).
    max_in_flight: int = 1000
    #: Stop scheduling after this many arrivals in all (0: no limit).
    max_arrivals: int = 0
    #: Seconds after the last arrival for calls in flight to finish before the run stops.
    drain_s: float = 3.0
    #: Vehicles streaming telemetry and watching routes (fleet and suite workloads).
    vehicles: int = 4
    #: Deadline of each unary call.
    timeout_s: float = 5.0
    #: Prefix of every id a run creates (orders, events, devices), so runs never collide.
    run_tag: str = "lt"
    #: Wall-clock epoch seconds that simulated times are counted from.
    clock_base_s: float = 0.0
    #: When set, send nothing: write the calls that would be made to this directory.
    record_dir: str = ""
    #: Where each load-generating process writes the CPU time it used during the run.
    out_dir: str = ""
    echo_payload_bytes: int = 64
    #: Shoppers think ``think_scale`` times the session model's think time between actions
    #: (0: back to back, so one arrival is one whole session at the arrival's rate).
    think_scale: float = 0.0
    #: Vans drive this many times faster than the wall clock (timestamps compressed to match).
    fleet_speedup: float = 10.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoadTestOptions:
        data: dict[str, Any] = json.loads(text) if text else {}
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def open_loop(self) -> bool:
        return self.shape != "closed"
