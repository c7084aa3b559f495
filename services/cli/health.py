"""``shoptwin health TARGET``: ask a server's gRPC health service whether it is SERVING.

The exit code is the answer (0 SERVING, 1 anything else), so container health checks
(``docker compose``'s ``healthcheck``) and scripts run the same command the tests run. Kubernetes
uses its native gRPC probe against the same health service instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.cli.commands import CommandGroups
from services.runtime.settings import SettingsError

#: Health statuses by number (grpc.health.v1.HealthCheckResponse.ServingStatus); spelled out here
#: so that ``--help`` does not import grpc.
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
SERVING = 1


def register(groups: CommandGroups) -> None:
    parser = groups.top.add_parser(
        "health",
        help="check a server's gRPC health (exit 0 when SERVING)",
        description="Call grpc.health.v1.Health/Check on TARGET (host:port or dns:///name:port). "
        "Exit 0 when the answer is SERVING, 1 otherwise (NOT_SERVING, no answer, unknown "
        "service), with the reason on stderr. Health is exempt from bearer-token auth.",
    )
    parser.add_argument("target", metavar="TARGET", help="server address, e.g. 127.0.0.1:50051")
    parser.add_argument(
        "--service",
        default="",
        metavar="NAME",
        help="gRPC service to ask about, e.g. shoptwin.v1.IntentService "
        "(default: the server as a whole)",
    )
    parser.add_argument(
        "--timeout",
        default="2",
        metavar="SECONDS",
        help="deadline of the health call in seconds (default: 2)",
    )
    parser.add_argument(
        "--tls-ca", type=Path, default=None, help="CA that signed the server's certificate (TLS)"
    )
    parser.add_argument(
        "--tls-client-cert", type=Path, default=None, help="client certificate (mTLS)"
    )
    parser.add_argument("--tls-client-key", type=Path, default=None, help="client key (mTLS)")
    parser.add_argument(
        "--tls-server-name",
        default=None,
        metavar="NAME",
        help="host name to check the server certificate against when TARGET is an IP address",
    )
    parser.set_defaults(handler=run)


def parse_timeout(text: str) -> float:
    """The ``--timeout`` value in seconds; ``SettingsError`` names the flag when it is bad."""
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"--timeout: expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 600:
        raise SettingsError(f"--timeout: must be above 0 and at most 600 seconds, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    from services.runtime.client import ChannelOptions
    from services.runtime.process import health_status
    from services.runtime.tls import ClientTLS

    timeout_s = parse_timeout(args.timeout)
    if (args.tls_client_cert is None) != (args.tls_client_key is None):
        raise SettingsError("--tls-client-cert and --tls-client-key: give both or neither")
    tls_paths = (args.tls_ca, args.tls_client_cert, args.tls_client_key)
    for flag, path in zip(
        ("--tls-ca", "--tls-client-cert", "--tls-client-key"), tls_paths, strict=True
    ):
        if path is not None and not path.is_file():
            raise SettingsError(f"{flag}: file not found: {path}")
    tls = None
    if any(p is not None for p in tls_paths) or args.tls_server_name:
        tls = ClientTLS(
            ca_cert=args.tls_ca,
            client_cert=args.tls_client_cert,
            client_key=args.tls_client_key,
            server_name=args.tls_server_name,
        )
    status = health_status(
        args.target,
        args.service,
        timeout_s=timeout_s,
        options=ChannelOptions(retry=None, tls=tls, default_timeout_s=timeout_s),
    )
    what = f"{args.target} ({args.service or 'server'})"
    if status == SERVING:
        print(f"{what}: SERVING")
        return 0
    if status is None:
        print(
            f"shoptwin health: {what}: no answer within {timeout_s:g} s "
            "(not listening, unknown service, or a TLS mismatch)",
            file=sys.stderr,
        )
    else:
        print(f"shoptwin health: {what}: {STATUS_NAMES.get(status, status)}", file=sys.stderr)
    return 1
