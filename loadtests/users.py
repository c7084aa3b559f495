"""Locust users and the load shape of ShopTwin. Imported only by ``loadtests.locustfile``,
which initialises gRPC's gevent support first.

Per Locust process, one :class:`ProcessState` (kept on the Locust environment, never in a module
global) holds the run's options, the shape, one gRPC transport whose channels every user reuses,
the workloads and, when recording, the recorded calls.
"""

from __future__ import annotations

import json
import os
import random
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gevent
import gevent.pool
from locust import LoadTestShape, User, constant, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtests.arrivals import arrival_times, derive_seed
from loadtests.calls import CallClient, CallRecord, GrpcTransport, RecordingTransport
from loadtests.options import LoadTestOptions
from loadtests.shapes import ClosedLoopShape, OpenLoopShape, Shape, build_shape
from loadtests.workloads import FleetWorkload, LoadWorld, VanDriver, Workload, build_workload

OPTIONS_FLAG = "--shoptwin-options"


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        OPTIONS_FLAG,
        default="",
        help="ShopTwin load-test options as JSON (written by `shoptwin loadtest`)",
    )


def options_of(environment: Environment) -> LoadTestOptions:
    """The run's options from the parsed command line (workers get them from the master)."""
    parsed = environment.parsed_options
    text = getattr(parsed, "shoptwin_options", "") if parsed is not None else ""
    return LoadTestOptions.from_json(text or os.environ.get("SHOPTWIN_LOADTEST_OPTIONS", ""))


@dataclass
class ProcessState:
    """Everything the users of one Locust process share."""

    environment: Environment
    options: LoadTestOptions
    shape: Shape
    transport: GrpcTransport | None
    records: list[CallRecord] = field(default_factory=list)
    workloads: dict[str, Workload] = field(default_factory=dict)
    load_world: LoadWorld | None = None
    _set_up: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counters: dict[str, int] = field(default_factory=dict)

    @property
    def worker_index(self) -> int:
        runner = self.environment.runner
        return int(getattr(runner, "worker_index", 0)) if runner is not None else 0

    def next_key(self, prefix: str) -> str:
        """A key unique in the run: prefix, worker index, running number in this process."""
        count = self._counters.get(prefix, 0)
        self._counters[prefix] = count + 1
        return f"{prefix}{self.worker_index}.{count}"

    def client(self, key: str) -> CallClient:
        """A call client for one transaction (recording, or over the shared channels)."""
        fire = self.environment.events.request.fire
        transport: Any
        if self.transport is None:
            transport = RecordingTransport(self.records, key)
        else:
            transport = self.transport
        return CallClient(transport, fire, unary_timeout_s=self.options.timeout_s, key=key)

    def workload(self, name: str) -> Workload:
        """The workload ``name``, set up once in this process before its first use."""
        with self._lock:
            workload = self.workloads.get(name)
            if workload is None:
                if self.load_world is None and name != "echo":
                    self.load_world = LoadWorld.create(self.options)
                workload = build_workload(name, self.options, self.load_world, gevent.sleep)
                self.workloads[name] = workload
            if name not in self._set_up:
                self._set_up.add(name)
                workload.setup(self.client(f"setup-{name}-{self.worker_index}"))
        return workload

    def run(self, workload_name: str, key: str, ordinal: int) -> None:
        """One transaction, with randomness fixed by the seed and its key."""
        workload = self.workload(workload_name)
        seed = derive_seed(self.options.seed, workload_name, key)
        workload.transaction(self.client(key), seed, key, ordinal)

    def van_driver(self) -> VanDriver:
        """The next van of the fleet for a fleet user of this process."""
        workload = self.workload("fleet")
        assert isinstance(workload, FleetWorkload)
        count = self._counters.get("van", 0)
        self._counters["van"] = count + 1
        lanes = max(1, self.options.lanes)
        return workload.driver((count * lanes + self.worker_index) % self.options.vehicles)

    def write_records(self) -> None:
        if not self.options.record_dir or self.transport is not None:
            return
        directory = Path(self.options.record_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"calls-{self.worker_index}-{os.getpid()}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for record in self.records:
                handle.write(json.dumps(record.as_dict(), sort_keys=True) + "\n")


def state_of(environment: Environment) -> ProcessState:
    """The process's state, created on first use (after workers have the master's options)."""
    state: ProcessState | None = getattr(environment, "shoptwin_state", None)
    if state is None:
        options = options_of(environment)
        transport = None if options.record_dir else GrpcTransport(options.targets)
        state = ProcessState(environment, options, build_shape(options), transport)
        environment.shoptwin_state = state  # type: ignore[attr-defined]
    return state


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@events.test_start.add_listener
def _note_cpu_at_start(environment: Environment, **_kwargs: Any) -> None:
    environment.shoptwin_cpu_start = (_cpu_seconds(), time.monotonic())  # type: ignore[attr-defined]


@events.test_stop.add_listener
def _write_records(environment: Environment, **_kwargs: Any) -> None:
    master = isinstance(environment.runner, MasterRunner)
    state: ProcessState | None = getattr(environment, "shoptwin_state", None)
    if state is not None and not master:
        state.write_records()
    # CPU this load generator used during the run (not start-up): requests per CPU second is
    # its capacity on a machine where it has a core to itself.
    start = getattr(environment, "shoptwin_cpu_start", None)
    options = options_of(environment)
    if start is not None and options.out_dir:
        cpu_start, wall_start = start
        path = Path(options.out_dir) / f"cpu-{os.getpid()}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "cpu_s": _cpu_seconds() - cpu_start,
                    "wall_s": time.monotonic() - wall_start,
                    # The master only aggregates; workers and a single process make the calls.
                    "role": "master" if master else "generator",
                }
            ),
            encoding="utf-8",
        )


class ShopTwinUser(User):
    """A closed-loop user: runs its workload's transactions back to back (no think time, so
    the load is set by the number of users)."""

    abstract = True
    workload_name: ClassVar[str] = ""

    def on_start(self) -> None:
        self.state = state_of(self.environment)
        self.user_key = self.state.next_key(f"{type(self).__name__}-")
        self.iteration = 0

    @task
    def iterate(self) -> None:
        self.state.run(self.workload_name, f"{self.user_key}/{self.iteration}", self.iteration)
        self.iteration += 1


class EchoUser(ShopTwinUser):
    """Echo calls against the bare echo service: the throughput of the load generator itself."""

    workload_name = "echo"


class RecommendationUser(ShopTwinUser):
    """Recommend, SimilarItems, feedback (unary and streamed), catalogue, model info/reload."""

    workload_name = "recommendation"


class IntentUser(ShopTwinUser):
    """Customer-service messages with known intents: Classify, ClassifyBatch, GetModelInfo."""

    workload_name = "intent"


class DispatchUser(ShopTwinUser):
    """Orders, their status and cancellation, stops, positions, plans and route watches."""

    workload_name = "dispatch"


class TelemetryUser(ShopTwinUser):
    """Ingest, Upload, queries, live and alert watches on the fleet's readings."""

    workload_name = "telemetry"


class ShopperJourneyUser(ShopTwinUser):
    """Shopper sessions from the simulator's session model, one after another: recommend,
    feedback, order, customer-service message."""

    workload_name = "journey"
    weight = 6


class FleetUser(User):
    """One van for the whole run: streams its telemetry over Upload with sequence numbers,
    watches its route from dispatch, reports stops and positions."""

    def on_start(self) -> None:
        self.state = state_of(self.environment)
        self.driver = self.state.van_driver()
        self.segments = 0

    @task
    def drive(self) -> None:
        key = f"{self.driver.vehicle_id}/{self.segments}"
        self.driver.segment(self.state.client(key))
        self.segments += 1


class OpenLoopUser(User):
    """One arrival lane: starts a greenlet per arrival of the seeded schedule, never waiting
    for answers, at most ``max_in_flight`` at once; arrivals beyond that are dropped and
    reported as failures of ``open-loop/dropped``."""

    abstract = False
    fixed_count = 1
    # One pass of the schedule per run: after it the user waits, and a waiting user stops at
    # once when the run ends.
    wait_time = constant(24 * 3600)

    @task
    def arrivals(self) -> None:
        state = state_of(self.environment)
        options = state.options
        shape = state.shape
        assert isinstance(shape, OpenLoopShape)
        lane = state.next_key("lane")
        lanes = max(1, options.lanes)
        rng = random.Random(derive_seed(options.seed, "arrivals", lane))
        max_arrivals = -(-options.max_arrivals // lanes) if options.max_arrivals else None
        in_flight = gevent.pool.Group()
        started = time.monotonic()
        schedule = arrival_times(
            lambda t: shape.rate_at(t) / lanes,
            shape.peak_rate / lanes,
            shape.duration_s,
            rng,
            max_arrivals=max_arrivals,
        )
        for index, at in enumerate(schedule):
            delay = started + at - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            if len(in_flight) >= options.max_in_flight:
                self.environment.events.request.fire(
                    request_type="arrival",
                    name="open-loop/dropped",
                    response_time=0.0,
                    response_length=0,
                    exception=RuntimeError(f"{options.max_in_flight} arrivals in flight"),
                    context={"key": f"{lane}/{index}"},
                )
                continue
            in_flight.spawn(state.run, options.workload, f"{lane}/{index}", index)
        in_flight.join(timeout=options.drain_s)
        in_flight.kill(block=False)


SERVICE_USERS: tuple[type[User], ...] = (
    RecommendationUser,
    IntentUser,
    DispatchUser,
    TelemetryUser,
)

WORKLOAD_USERS: dict[str, list[type[User]]] = {
    "echo": [EchoUser],
    "recommendation": [RecommendationUser],
    "intent": [IntentUser],
    "dispatch": [DispatchUser],
    "telemetry": [TelemetryUser],
    "journey": [ShopperJourneyUser],
    "fleet": [FleetUser],
    "suite": [
        ShopperJourneyUser,
        RecommendationUser,
        IntentUser,
        DispatchUser,
        TelemetryUser,
        FleetUser,
    ],
}


def closed_loop_user_classes(options: LoadTestOptions) -> tuple[list[type[User]], int]:
    """The workload's user classes and the total user count (vans come on top of --users)."""
    classes = WORKLOAD_USERS[options.workload]
    if options.workload == "fleet":
        FleetUser.fixed_count = options.vehicles
        return classes, options.vehicles
    if options.workload == "suite":
        # One user per service, the vans, and journeys for the rest of --users, so every
        # service gets direct traffic whatever the user count.
        for user_class in SERVICE_USERS:
            user_class.fixed_count = 1
        FleetUser.fixed_count = options.vehicles
        users = max(options.users, len(SERVICE_USERS) + 1)
        return classes, users + options.vehicles
    for user_class in classes:
        user_class.fixed_count = 0
    return classes, options.users


class ShopTwinShape(LoadTestShape):
    """The run's shape from its options: open loop runs ``lanes`` arrival users (plus the
    fleet's vehicles); closed loop runs ``users`` users of the workload's classes."""

    def tick(self) -> tuple[int, float, list[type[User]]] | None:
        assert self.runner is not None
        options = options_of(self.runner.environment)
        # Built once: daily and spike shapes read a scenario file.
        cached: tuple[LoadTestOptions, Shape] | None = getattr(self, "_built", None)
        if cached is None or cached[0] != options:
            cached = (options, build_shape(options))
            self._built = cached
        shape = cached[1]
        run_time = self.get_run_time()
        if isinstance(shape, ClosedLoopShape):
            if run_time >= shape.duration_s:
                return None
            classes, count = closed_loop_user_classes(options)
            return count, shape.spawn_rate, classes
        if run_time >= shape.duration_s + options.drain_s:
            return None
        classes, count = open_loop_user_classes(options)
        return count, max(float(count), 1.0), classes


def open_loop_user_classes(options: LoadTestOptions) -> tuple[list[type[User]], int]:
    """Arrival lanes, plus one fleet user per van for the suite."""
    OpenLoopUser.fixed_count = max(1, options.lanes)
    if options.workload == "suite":
        FleetUser.fixed_count = options.vehicles
        return [OpenLoopUser, FleetUser], OpenLoopUser.fixed_count + options.vehicles
    return [OpenLoopUser], OpenLoopUser.fixed_count


__all__ = [
    "DispatchUser",
    "EchoUser",
    "FleetUser",
    "IntentUser",
    "OpenLoopUser",
    "RecommendationUser",
    "ShopTwinShape",
    "ShopTwinUser",
    "ShopperJourneyUser",
    "TelemetryUser",
    "WorkerRunner",
]
