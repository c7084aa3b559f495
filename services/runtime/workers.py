"""N worker processes serving one port through SO_REUSEPORT, for CPU-bound services.

The parent never creates a gRPC channel or server: it spawns the workers (``spawn``, not
``fork``, so no worker inherits gRPC's threads), serves the summed Prometheus metrics, and
forwards SIGTERM/SIGINT. Each worker runs its own event loop and server on the same port; the
kernel spreads new connections across them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import tempfile
from typing import Any

import structlog

from services.runtime.config import ServerSettings
from services.runtime.logging import configure_logging
from services.runtime.metrics import RpcMetrics, multiprocess_registry, serve_metrics
from services.runtime.settings import SettingsError

log = structlog.get_logger("shoptwin.workers")


def _worker_main(service_name: str, settings: ServerSettings, options: Any, index: int) -> None:
    from services.registry import get_definition
    from services.runtime.server import serve_until_signalled

    configure_logging(settings.log_level, settings.log_format)
    structlog.contextvars.bind_contextvars(worker=index)
    definition = get_definition(service_name)
    metrics = RpcMetrics.create(None)
    asyncio.run(
        serve_until_signalled(definition, settings, options, reuse_port=True, metrics=metrics)
    )


def run_workers(service_name: str, settings: ServerSettings, options: Any) -> int:
    """Serve with ``settings.workers`` processes on one port; returns the exit code."""
    if settings.port == 0:
        raise SettingsError("workers: several workers need a fixed --port (0 picks one each)")
    with tempfile.TemporaryDirectory(prefix="shoptwin-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(
                target=_worker_main,
                args=(service_name, settings, options, index),
                name=f"{service_name}-worker-{index}",
            )
            for index in range(settings.workers)
        ]
        for process in processes:
            process.start()
        if settings.metrics_port:
            serve_metrics(settings.metrics_port, settings.host, multiprocess_registry())

        def forward(signum: int, _frame: Any) -> None:
            for process in processes:
                if process.is_alive() and process.pid is not None:
                    os.kill(process.pid, signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        log.info(
            "workers started", service=service_name, workers=settings.workers, port=settings.port
        )
        for process in processes:
            process.join()
        codes = [process.exitcode for process in processes]
        log.info("workers stopped", service=service_name, exit_codes=codes)
        return 0 if all(code == 0 for code in codes) else 1
