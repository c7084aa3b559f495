"""Intent app: loads the newest model (if any), wires the pipeline, dispatch client and
servicer to the runtime. Without a model the service still starts and reports SERVING; its
RPCs answer UNAVAILABLE until one is trained and the service restarted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from grpc import aio
from prometheus_client import CollectorRegistry

from services.intent.config import IntentOptions
from services.intent.inference import IntentModel, ModelFormatError, resolve_model_dir
from services.intent.order_lookup import DispatchOrderLookup
from services.intent.pipeline import IntentPipeline
from services.intent.server import SERVICE_NAME, IntentServicer, add_to_server
from services.runtime.client import RetryPolicy
from services.runtime.config import ServerSettings
from services.runtime.metrics import BatchMetrics

log = structlog.get_logger("shoptwin.intent")


def model_root(data_dir: Path) -> Path:
    """Where trained intent models live under the data directory."""
    return data_dir / "models" / "intent"


class IntentApp:
    grpc_service_names = (SERVICE_NAME,)

    def __init__(self, settings: ServerSettings, options: IntentOptions) -> None:
        self._settings = settings
        self._options = options
        self._pipeline: IntentPipeline | None = None
        self._lookup: DispatchOrderLookup | None = None
        self._servicer = IntentServicer(None)
        self._batch_metrics: BatchMetrics | None = None

    def bind_metrics(self, registry: CollectorRegistry | None) -> None:
        """The micro-batches next to the runtime's RPC metrics."""
        self._batch_metrics = BatchMetrics.create(registry, "intent")

    async def start(self) -> None:
        options = self._options
        where = options.model_dir or model_root(self._settings.data_dir)
        model_dir = resolve_model_dir(where)
        if model_dir is None:
            reason = (
                f"no intent model under {where}; train one with "
                "`shoptwin train intent --default` (or --data CSV --out DIR)"
            )
            log.warning("no model", path=str(where))
            self._servicer = IntentServicer(None, reason)
            return
        try:
            model = await asyncio.to_thread(
                IntentModel,
                model_dir,
                variant=options.model_variant or None,
                threads=options.inference_threads,
            )
        except (ModelFormatError, OSError) as exc:
            log.error("model failed to load", path=str(model_dir), error=str(exc))
            self._servicer = IntentServicer(None, f"intent model at {model_dir} failed to load")
            return
        if options.dispatch_target:
            self._lookup = DispatchOrderLookup(
                options.dispatch_target,
                timeout_s=options.dispatch_timeout_s,
                attempts=options.dispatch_attempts,
                # TLS and token for the call come from the shared upstream_* settings.
                channel_options=self._settings.upstream_channel_options(
                    default_timeout_s=options.dispatch_timeout_s,
                    retry=RetryPolicy(
                        max_attempts=options.dispatch_attempts,
                        initial_backoff_s=0.05,
                        max_backoff_s=0.2,
                    ),
                ),
            )
        self._pipeline = IntentPipeline(
            model,
            lookup=self._lookup,
            templates=model.templates,
            max_batch=options.max_batch,
            batch_metrics=self._batch_metrics,
        )
        self._pipeline.start()
        self._servicer = IntentServicer(self._pipeline)
        log.info("model loaded", version=model.version, variant=model.variant, path=str(model_dir))

    def register(self, server: aio.Server) -> None:
        add_to_server(self._servicer, server)

    async def stop(self) -> None:
        if self._pipeline is not None:
            await self._pipeline.stop()
        if self._lookup is not None:
            await self._lookup.close()


def create_app(settings: ServerSettings, options: IntentOptions) -> IntentApp:
    return IntentApp(settings, options)
