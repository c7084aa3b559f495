"""What one arrival (open loop) or one iteration of a user (closed loop) does, as plain Python
over a :class:`~loadtests.calls.CallClient`: no Locust, no gevent, so tests run it directly.

Each transaction gets its own ``random.Random`` seeded from the run's seed and the
transaction's key, so the same seed gives the same requests whatever the timing.
"""

from __future__ import annotations

import random
from typing import Protocol

from loadtests.calls import CallClient
from loadtests.options import LoadTestOptions
from shoptwin.v1 import echo_pb2


class Workload(Protocol):
    """One kind of traffic."""

    name: str

    def setup(self, client: CallClient) -> None:
        """Once per Locust process before traffic (e.g. configure the fleet)."""

    def transaction(self, client: CallClient, rng: random.Random, key: str) -> None:
        """One unit of work: one arrival, or one iteration of a closed-loop user. ``key``
        names it uniquely within the run (ids it creates derive from it)."""


class EchoWorkload:
    """One Echo call with a fixed-size payload: the bare gRPC round trip."""

    name = "echo"

    def __init__(self, options: LoadTestOptions) -> None:
        self._request = echo_pb2.EchoRequest(payload=b"x" * options.echo_payload_bytes)

    def setup(self, client: CallClient) -> None:
        del client

    def transaction(self, client: CallClient, rng: random.Random, key: str) -> None:
        del rng, key
        client.unary("echo", "Echo", self._request)


def build_workload(name: str, options: LoadTestOptions) -> Workload:
    """The workload called ``name`` for a run's options."""
    if name == "echo":
        return EchoWorkload(options)
    raise KeyError(f"unknown workload {name!r}")
