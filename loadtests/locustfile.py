"""The Locust file of ShopTwin: ``python -m locust -f loadtests/locustfile.py --headless ...``
(``shoptwin loadtest`` writes the whole command line).

gRPC's gevent support must be initialised before any channel exists in a Locust process (Locust
has monkey-patched the process with gevent before it imports this file); without it blocking
gRPC calls stall every greenlet of the process.
"""

from grpc.experimental import gevent as grpc_gevent  # type: ignore[attr-defined]

grpc_gevent.init_gevent()

from loadtests.users import (  # noqa: E402  (must follow init_gevent)
    DispatchUser,
    EchoUser,
    FleetUser,
    IntentUser,
    OpenLoopUser,
    RecommendationUser,
    ShopperJourneyUser,
    ShopTwinShape,
    TelemetryUser,
)

__all__ = [
    "DispatchUser",
    "EchoUser",
    "FleetUser",
    "IntentUser",
    "OpenLoopUser",
    "RecommendationUser",
    "ShopTwinShape",
    "ShopperJourneyUser",
    "TelemetryUser",
]
