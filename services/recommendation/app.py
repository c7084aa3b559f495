"""Recommendation app: wires the servicer to the runtime.

Until the service's own issue lands, every RPC answers UNIMPLEMENTED (the generated base
servicer), never a fake result.
"""

from __future__ import annotations

from services.recommendation.config import RecommendationOptions
from services.runtime.app import StaticApp
from services.runtime.config import ServerSettings
from shoptwin.v1 import recommendation_pb2, recommendation_pb2_grpc

SERVICE_NAME = recommendation_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name


def create_app(settings: ServerSettings, options: RecommendationOptions) -> StaticApp:
    return StaticApp(
        [SERVICE_NAME],
        [
            (
                recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server,
                recommendation_pb2_grpc.RecommendationServiceServicer(),  # type: ignore[abstract]
            )
        ],
    )
