"""A ready-made :class:`~services.runtime.server.ServiceApp` for services without lifecycle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from grpc import aio

Registration = tuple[Callable[[Any, aio.Server], None], Any]


class StaticApp:
    """Registers fixed servicers; nothing to open or close."""

    def __init__(self, names: Sequence[str], registrations: Sequence[Registration]) -> None:
        self.grpc_service_names = tuple(names)
        self._registrations = list(registrations)

    async def start(self) -> None:
        return None

    def register(self, server: aio.Server) -> None:
        for add_to_server, servicer in self._registrations:
            add_to_server(servicer, server)

    async def stop(self) -> None:
        return None
