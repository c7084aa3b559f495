"""Intent app: wires the servicer to the runtime.

Until the service's own issue lands, every RPC answers UNIMPLEMENTED (the generated base
servicer), never a fake result.
"""

from __future__ import annotations

from services.intent.config import IntentOptions
from services.runtime.app import StaticApp
from services.runtime.config import ServerSettings
from shoptwin.v1 import intent_pb2, intent_pb2_grpc

SERVICE_NAME = intent_pb2.DESCRIPTOR.services_by_name["IntentService"].full_name


def create_app(settings: ServerSettings, options: IntentOptions) -> StaticApp:
    return StaticApp(
        [SERVICE_NAME],
        [
            (
                intent_pb2_grpc.add_IntentServiceServicer_to_server,
                intent_pb2_grpc.IntentServiceServicer(),  # type: ignore[abstract]
            )
        ],
    )
