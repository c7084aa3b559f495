"""Dispatch app: wires the servicer to the runtime.

Until the service's own issue lands, every RPC answers UNIMPLEMENTED (the generated base
servicer), never a fake result.
"""

from __future__ import annotations

from services.dispatch.config import DispatchOptions
from services.runtime.app import StaticApp
from services.runtime.config import ServerSettings
from shoptwin.v1 import dispatch_pb2, dispatch_pb2_grpc

SERVICE_NAME = dispatch_pb2.DESCRIPTOR.services_by_name["DispatchService"].full_name


def create_app(settings: ServerSettings, options: DispatchOptions) -> StaticApp:
    return StaticApp(
        [SERVICE_NAME],
        [
            (
                dispatch_pb2_grpc.add_DispatchServiceServicer_to_server,
                dispatch_pb2_grpc.DispatchServiceServicer(),  # type: ignore[abstract]
            )
        ],
    )
