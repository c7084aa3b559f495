"""Dispatch app: opens the plan's store, starts the engine and the telemetry feed, and wires
the servicer to the runtime."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

from grpc import aio

from services.dispatch.config import DispatchOptions
from services.dispatch.engine import DispatchEngine, EngineSettings
from services.dispatch.server import DispatchServicer
from services.dispatch.store import DispatchStore
from services.dispatch.telemetry_feed import FeedSettings, TelemetryFeed
from services.runtime.config import ServerSettings
from shoptwin.v1 import dispatch_pb2, dispatch_pb2_grpc

SERVICE_NAME = dispatch_pb2.DESCRIPTOR.services_by_name["DispatchService"].full_name


class DispatchApp:
    """The live engine, its store and telemetry feed, and a process pool for Plan."""

    grpc_service_names = (SERVICE_NAME,)

    def __init__(self, settings: ServerSettings, options: DispatchOptions) -> None:
        self.settings = settings
        self.options = options
        db_path = (
            Path(options.db_path) if options.db_path else settings.data_dir / "dispatch.sqlite3"
        )
        self.engine = DispatchEngine(
            DispatchStore(db_path, synchronous=options.sqlite_synchronous),
            EngineSettings(
                reopt_time_limit_s=options.reopt_time_limit_s,
                reopt_interval_s=options.reopt_interval_s,
                solver_executor=options.solver_executor,
                seed=options.seed,
                background=options.background_reopt,
                solver_niceness=options.solver_niceness,
            ),
        )
        self.feed: TelemetryFeed | None = None
        self._plan_executor: Executor | None = None

    async def start(self) -> None:
        await self.engine.start()
        # spawn, not fork: a forked child would inherit gRPC's threads.
        self._plan_executor = ProcessPoolExecutor(
            max_workers=self.options.plan_workers, mp_context=multiprocessing.get_context("spawn")
        )
        if self.options.telemetry_target:
            self.feed = TelemetryFeed(
                FeedSettings(self.options.telemetry_target, self.options.telemetry_fleet_id),
                sink=self.engine.report_position,
                known_vehicle=lambda vid: vid in self.engine.dispatcher.vehicles,
                # TLS and token for the upstream call come from the shared upstream_* settings;
                # the feed reconnects itself, so no channel-level retry, and a stream has no
                # deadline.
                channel_options=self.settings.upstream_channel_options(
                    retry=None, default_timeout_s=None
                ),
            )
            self.feed.start()

    def register(self, server: aio.Server) -> None:
        assert self._plan_executor is not None, "start() first"
        dispatch_pb2_grpc.add_DispatchServiceServicer_to_server(
            DispatchServicer(self.engine, self._plan_executor), server
        )

    async def stop(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
        if self._plan_executor is not None:
            self._plan_executor.shutdown(wait=False, cancel_futures=True)
        await self.engine.stop()


def create_app(settings: ServerSettings, options: DispatchOptions) -> DispatchApp:
    return DispatchApp(settings, options)
