"""Services as child processes: start ``shoptwin serve NAME``, wait until its health check says
SERVING, stop it with SIGTERM. Used by ``shoptwin up``, the benchmarks and end-to-end tests, so
they all run the same command a container runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.client import ChannelOptions, create_sync_channel


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def health_status(
    target: str,
    service: str = "",
    *,
    timeout_s: float = 1.0,
    options: ChannelOptions | None = None,
) -> int | None:
    """The health status of ``service`` at ``target``, or ``None`` when it does not answer."""
    channel = create_sync_channel(target, options or ChannelOptions(retry=None))
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        return int(response.status)
    except grpc.RpcError:
        return None
    finally:
        channel.close()


def wait_serving(
    target: str,
    *,
    timeout_s: float,
    service: str = "",
    options: ChannelOptions | None = None,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until ``target`` reports SERVING; ``TimeoutError`` or ``RuntimeError`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{target}: process exited with code {process.returncode}")
        status = health_status(target, service, options=options)
        if status == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{target}: not SERVING after {timeout_s:.0f} s")


@dataclass
class ServiceProcess:
    """One ``shoptwin serve`` child process."""

    service: str
    port: int
    host: str = "127.0.0.1"
    extra_args: Sequence[str] = ()
    #: Options of `shoptwin` itself, placed before `serve` (e.g. ["--config", "x.toml"]).
    global_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "services.cli.main",
            "serve",
            self.service,
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.extra_args,
        ]

    def start(self) -> None:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(),
            env={**os.environ, **self.env},
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl-C in a terminal reaches the parent only
        )

    def wait_serving(self, timeout_s: float = 60.0, options: ChannelOptions | None = None) -> None:
        wait_serving(self.target, timeout_s=timeout_s, options=options, process=self.process)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        """Wait for exit (SIGKILL after ``timeout_s``); returns the exit code."""
        if self.process is None:
            return 0
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def stop(self, timeout_s: float = 20.0) -> int:
        self.terminate()
        return self.wait(timeout_s)


def stop_all(processes: Iterable[ServiceProcess], timeout_s: float = 20.0) -> list[int]:
    """SIGTERM every process at once, then wait for each; returns the exit codes."""
    processes = list(processes)
    for proc in processes:
        proc.terminate()
    return [proc.wait(timeout_s) for proc in processes]
