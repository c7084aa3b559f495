"""Recommendation app: opens the feedback store, loads the newest model (if any) and wires the
servicer to the runtime. Without a model the service still starts and reports SERVING; ranking
calls answer UNAVAILABLE "no model loaded" until ReloadModel finds one."""

from __future__ import annotations

from grpc import aio
from prometheus_client import CollectorRegistry

from services.recommendation.config import RecommendationOptions
from services.recommendation.engine import RecommendationEngine, ThreadRanker
from services.recommendation.ranker import ProcessRanker, RankerMetrics
from services.recommendation.server import RecommendationServicer
from services.recommendation.store import FeedbackStore
from services.runtime.config import ServerSettings
from services.runtime.metrics import BatchMetrics
from shoptwin.v1 import recommendation_pb2, recommendation_pb2_grpc

SERVICE_NAME = recommendation_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name


class RecommendationApp:
    def __init__(self, settings: ServerSettings, options: RecommendationOptions) -> None:
        self.grpc_service_names = (SERVICE_NAME,)
        self.settings = settings
        self.options = options
        self.engine: RecommendationEngine | None = None
        self._store: FeedbackStore | None = None
        self._ranker_metrics: RankerMetrics | None = None
        self._batch_metrics: BatchMetrics | None = None

    def bind_metrics(self, registry: CollectorRegistry | None) -> None:
        """The ranking process's state and the micro-batches next to the runtime's RPC
        metrics."""
        self._ranker_metrics = RankerMetrics.create(registry)
        self._batch_metrics = BatchMetrics.create(registry, "recommendation")

    async def start(self) -> None:
        import torch

        torch.set_num_threads(self.options.torch_threads)
        data_dir = self.settings.data_dir
        db = self.options.feedback_db or data_dir / "recommendation" / "feedback.db"
        self._store = FeedbackStore(db)
        self.engine = RecommendationEngine(
            self.options.model_root or data_dir / "models" / "recommendation",
            self._store,
            model_dir=self.options.model_dir,
            batch_window_s=self.options.batch_window_ms / 1000.0,
            max_batch=self.options.max_batch,
            ranker=ProcessRanker(self.options.torch_threads, metrics=self._ranker_metrics)
            if self.options.ranking_process
            else ThreadRanker(),
            batch_metrics=self._batch_metrics,
        )
        await self.engine.start()

    def register(self, server: aio.Server) -> None:
        assert self.engine is not None, "start() first"
        recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server(
            RecommendationServicer(self.engine), server
        )

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop()
        if self._store is not None:
            self._store.close()


def create_app(settings: ServerSettings, options: RecommendationOptions) -> RecommendationApp:
    return RecommendationApp(settings, options)
