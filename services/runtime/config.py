"""Settings every service server shares (bind address, TLS, auth, limits, logging)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.runtime.client import ChannelOptions
from services.runtime.settings import SettingsError, setting
from services.runtime.tls import ClientTLS

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    host: str = setting("127.0.0.1", "address to bind; 0.0.0.0 or [::] to listen on all interfaces")
    port: int = setting(0, "gRPC port; 0 picks a free one", low=0, high=65535)
    metrics_port: int = setting(
        0, "port of the Prometheus /metrics endpoint; 0 disables it", low=0, high=65535
    )
    workers: int = setting(
        1,
        "worker processes sharing the port through SO_REUSEPORT (CPU-bound services)",
        low=1,
        high=64,
    )
    tls_cert: Path | None = setting(None, "PEM certificate chain of the server (enables TLS)")
    tls_key: Path | None = setting(None, "PEM private key of the server")
    tls_client_ca: Path | None = setting(
        None, "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)"
    )
    auth_token: str | None = setting(
        None, "bearer token clients must send as 'authorization: Bearer <token>' (health exempt)"
    )
    max_message_bytes: int = setting(
        16 * MIB, "largest request or response message in bytes", low=1024, high=1024 * MIB
    )
    max_concurrent_rpcs: int = setting(
        0,
        "RPCs in flight per process before RESOURCE_EXHAUSTED; 0 means unlimited",
        low=0,
        high=1_000_000,
    )
    keepalive_time_s: float = setting(
        60.0, "seconds between server keepalive pings on idle connections", low=1, high=86_400
    )
    keepalive_timeout_s: float = setting(
        20.0, "seconds to wait for a keepalive ping ack before closing", low=1, high=3_600
    )
    min_client_ping_interval_s: float = setting(
        10.0, "shortest interval between client pings the server tolerates", low=1, high=3_600
    )
    loop_lag_probe_ms: float = setting(
        25.0,
        "period of the event-loop lag probe behind shoptwin_event_loop_lag_seconds; 0 turns "
        "it and the GC-pause histogram off",
        low=0,
        high=60_000,
    )
    grace_s: float = setting(
        10.0, "seconds in-flight calls get to finish on shutdown", low=0, high=3_600
    )
    upstream_tls_ca: Path | None = setting(
        None, "CA that signed the services this one calls (turns on TLS for those channels)"
    )
    upstream_tls_cert: Path | None = setting(
        None, "client certificate this service presents upstream (mTLS)"
    )
    upstream_tls_key: Path | None = setting(None, "private key of upstream_tls_cert")
    upstream_tls_server_name: str | None = setting(
        None, "host name to verify in upstream certificates instead of the target's"
    )
    upstream_auth_token: str | None = setting(
        None, "bearer token this service sends to the services it calls"
    )
    data_dir: Path = setting(Path(".shoptwin"), "directory for databases and models")
    log_level: str = setting("info", "log level", choices=("debug", "info", "warning", "error"))
    log_format: str = setting("json", "log format", choices=("json", "console"))

    def validate(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("tls_cert and tls_key: set both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise SettingsError("tls_client_ca: mTLS needs tls_cert and tls_key as well")
        if (self.upstream_tls_cert is None) != (self.upstream_tls_key is None):
            raise SettingsError("upstream_tls_cert and upstream_tls_key: set both or neither")
        if self.upstream_tls_cert is not None and self.upstream_tls_ca is None:
            raise SettingsError("upstream_tls_cert: mTLS upstream needs upstream_tls_ca as well")
        for name in (
            "tls_cert",
            "tls_key",
            "tls_client_ca",
            "upstream_tls_ca",
            "upstream_tls_cert",
            "upstream_tls_key",
        ):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise SettingsError(f"{name}: file not found: {path}")
        if self.auth_token is not None and len(self.auth_token) < 16:
            raise SettingsError("auth_token: must be at least 16 characters")

    def upstream_channel_options(self, **overrides: Any) -> ChannelOptions:
        """Channel options for calls this service makes to others (intent → dispatch,
        dispatch → telemetry): TLS and token from the ``upstream_*`` settings, message limit
        from this server's; ``overrides`` replace any field (e.g. ``default_timeout_s``)."""
        tls = None
        if self.upstream_tls_ca is not None:
            tls = ClientTLS(
                ca_cert=self.upstream_tls_ca,
                client_cert=self.upstream_tls_cert,
                client_key=self.upstream_tls_key,
                server_name=self.upstream_tls_server_name,
            )
        options = ChannelOptions(
            tls=tls,
            auth_token=self.upstream_auth_token,
            max_message_bytes=self.max_message_bytes,
            metadata=(),
        )
        return dataclasses.replace(options, **overrides)

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class NoOptions:
    """Settings of a service that has none of its own."""
