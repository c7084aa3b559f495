"""The live dispatch engine: the plan, its store, the background re-optimisation and the
route watchers, on one event loop.

Each operation mutates the :class:`LiveDispatcher` synchronously (so operations never
interleave half-way), captures the changed rows, awaits their commit on the store's writer
thread, pushes changed routes to watchers, and only then answers. The solver runs in a process
pool (PyVRP holds the GIL while it searches), so RPCs stay fast while a pass runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import structlog

from services.dispatch.live import (
    Changes,
    LiveDispatcher,
    OrderView,
    PlanView,
    ReoptOutcome,
    VehicleRouteView,
)
from services.dispatch.problem import DepotSpec, OrderSpec, Point, VehicleSpec
from services.dispatch.solver import SolveOptions, solve_problem
from services.dispatch.store import DispatchStore, capture

log = structlog.get_logger("shoptwin.dispatch")

Clock = Callable[[], float]


def _lower_priority(increment: int) -> None:
    """Runs in the solver process before its first task."""
    if increment:
        with contextlib.suppress(OSError, AttributeError):
            os.nice(increment)


@dataclass(frozen=True)
class EngineSettings:
    #: Seconds of search per background pass.
    reopt_time_limit_s: float = 1.0
    #: Shortest gap between two passes; a window at risk starts one at once.
    reopt_interval_s: float = 2.0
    #: "process" (default) or "thread" pool for the solver.
    solver_executor: str = "process"
    seed: int = 0
    #: False turns background passes off (benchmark baselines, debugging).
    background: bool = True
    #: How much lower the solver process's CPU priority is (0: same as the server).
    solver_niceness: int = 10


class DispatchEngine:
    """Live dispatch: durable operations, background re-optimisation, route watchers."""

    def __init__(
        self, store: DispatchStore, settings: EngineSettings, clock: Clock = time.time
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.dispatcher = LiveDispatcher()
        #: vehicle id → each watcher's queue and the signature of what it was last sent.
        self._watchers: dict[str, dict[asyncio.Queue[VehicleRouteView], tuple[object, ...]]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor: Executor | None = None
        self.passes = 0
        self.last_outcome: ReoptOutcome | None = None
        self._pass_done = asyncio.Condition()
        #: Bumped by every outside change of the plan; a pass compares it before and after.
        self._generation = 0

    # ---------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await self.store.open()
        self.dispatcher = await self.store.load()
        self._executor = self._new_executor()
        if self.settings.background:
            self._task = asyncio.create_task(self._reoptimise_forever(), name="dispatch-reopt")
        if self.dispatcher.has_work():
            self._wake.set()

    def _new_executor(self) -> Executor:
        if self.settings.solver_executor == "thread":
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="dispatch-vrp")
        # spawn, not fork: a forked child would inherit gRPC's threads.
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_lower_priority,
            initargs=(self.settings.solver_niceness,),
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        await self.store.close()

    # --------------------------------------------------------------------------- operations

    async def configure_fleet(self, depot: DepotSpec, vehicles: list[VehicleSpec]) -> int:
        changes = self.dispatcher.configure_fleet(depot, vehicles, self.clock())
        await self._commit(changes)
        return self.dispatcher.plan_version

    async def submit(self, order: OrderSpec) -> OrderView:
        view, changes = self.dispatcher.submit(order, self.clock())
        await self._commit(changes)
        return view

    async def cancel(self, order_id: str) -> OrderView:
        view, changes = self.dispatcher.cancel(order_id, self.clock())
        await self._commit(changes)
        return view

    def status(self, order_id: str) -> OrderView:
        return self.dispatcher.status(order_id, self.clock())

    async def report_stop(
        self, vehicle_id: str, order_id: str, delivered: bool, reason: str, when: float | None
    ) -> OrderView:
        now = self.clock()
        view, changes = self.dispatcher.report_stop(
            vehicle_id, order_id, delivered, reason, now if when is None else when, now
        )
        await self._commit(changes)
        return view

    async def report_position(self, vehicle_id: str, position: Point, when: float | None) -> bool:
        """Move a vehicle; re-plan at once when a window on its route is at risk."""
        now = self.clock()
        at_risk, changes = self.dispatcher.report_position(
            vehicle_id, position, now if when is None else when, now
        )
        await self._commit(changes, wake=at_risk)
        return at_risk

    def vehicle_route(self, vehicle_id: str) -> VehicleRouteView:
        return self.dispatcher.vehicle_route(vehicle_id, self.clock())

    def plan(self) -> PlanView:
        return self.dispatcher.plan(self.clock())

    async def watch(self, vehicle_id: str) -> AsyncIterator[VehicleRouteView]:
        """The vehicle's route now, then each time it changes (until the caller stops)."""
        first = self.vehicle_route(vehicle_id)  # NOT_FOUND before subscribing
        queue: asyncio.Queue[VehicleRouteView] = asyncio.Queue(maxsize=64)
        self._watchers.setdefault(vehicle_id, {})[queue] = first.signature()
        try:
            yield first
            while True:
                yield await queue.get()
        finally:
            self._watchers.get(vehicle_id, {}).pop(queue, None)

    async def wait_for_pass(self, after: int, timeout_s: float) -> bool:
        """Wait until more than ``after`` passes have run (tests and benchmarks)."""
        async with self._pass_done:
            try:
                await asyncio.wait_for(
                    self._pass_done.wait_for(lambda: self.passes > after), timeout_s
                )
            except TimeoutError:
                return False
        return True

    def request_pass(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------------------ inside

    async def _commit(
        self, changes: Changes, *, wake: bool = False, internal: bool = False
    ) -> None:
        rows = capture(
            self.dispatcher, orders=changes.orders, vehicles=changes.vehicles, fleet=changes.fleet
        )
        if (changes.plan or wake) and not internal:
            # Counted before the write, so a pass that snapshots meanwhile sees it as news.
            self._generation += 1
            self._wake.set()
        await self.store.write(rows)
        self._notify(changes.vehicles if not changes.plan else set(self.dispatcher.vehicles))

    def _notify(self, vehicle_ids: set[str]) -> None:
        now = self.clock()
        for vid in vehicle_ids:
            queues = self._watchers.get(vid)
            if not queues or vid not in self.dispatcher.vehicles:
                continue
            view = self.dispatcher.vehicle_route(vid, now)
            signature = view.signature()
            for queue, last in list(queues.items()):
                if last == signature:
                    continue
                queues[queue] = signature
                if queue.full():
                    # A slow watcher gets the newest route, not a backlog of stale ones.
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                queue.put_nowait(view)

    async def _reoptimise_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.dispatcher.has_work():
                continue
            generation = self._generation
            snapshot = self.dispatcher.snapshot(self.clock())
            options = SolveOptions(
                time_limit_s=self.settings.reopt_time_limit_s,
                seed=self.settings.seed + self.passes,
                mode="optional",
            )
            started = time.perf_counter()
            try:
                result = await loop.run_in_executor(
                    self._executor,
                    solve_problem,
                    snapshot.problem,
                    options,
                    snapshot.initial_routes,
                )
            except asyncio.CancelledError:
                raise
            except BrokenExecutor:
                log.exception("solver process died; starting a new one")
                if self._executor is not None:
                    self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
                self._wake.set()
                await asyncio.sleep(self.settings.reopt_interval_s)
                continue
            except Exception:
                log.exception("re-optimisation failed")
                await asyncio.sleep(self.settings.reopt_interval_s)
                continue
            outcome, changes = self.dispatcher.apply(snapshot, result, self.clock())
            if not outcome.adopted:
                self.dispatcher.record_pass(outcome.cost_before, outcome.cost_after)
            await self._commit(changes, internal=True)
            if self._generation == generation:
                self._wake.clear()  # nothing happened during the pass: sleep until news
            self.last_outcome = outcome
            async with self._pass_done:
                self.passes += 1
                self._pass_done.notify_all()
            log.info(
                "re-optimised",
                orders=len(snapshot.problem.orders),
                adopted=outcome.adopted,
                cost_before=round(outcome.cost_before, 1),
                cost_after=round(outcome.cost_after, 1),
                seconds=round(time.perf_counter() - started, 3),
            )
            await asyncio.sleep(self.settings.reopt_interval_s)
