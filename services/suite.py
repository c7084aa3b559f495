"""Start a set of services as child processes, the one way `shoptwin up`, `simulate --up` and
`loadtest --up` all do it: build missing default models first, start every process before any
gRPC channel exists in this process, wire each service to the others it calls, and wait until
each reports SERVING.
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.cli.serve import load_service_settings
from services.registry import get_definition
from services.runtime.client import ChannelOptions
from services.runtime.config import ServerSettings
from services.runtime.process import ServiceProcess, free_port, stop_all

#: Dependency order: a service comes after the ones it calls.
START_ORDER = ("telemetry", "dispatch", "intent", "recommendation", "echo")


@dataclass
class Suite:
    """Running service processes and their addresses."""

    processes: list[ServiceProcess]
    settings: dict[str, ServerSettings] = field(default_factory=dict)

    @property
    def targets(self) -> dict[str, str]:
        return {proc.service: proc.target for proc in self.processes}

    def stop(self, timeout_s: float = 30.0) -> list[int]:
        """SIGTERM all at once, then wait; returns the exit codes."""
        return stop_all(self.processes, timeout_s=timeout_s)


def prepare(
    names: Sequence[str], config_path: str | None, log: Callable[[str], None] = print
) -> None:
    """Build what each service needs before it starts (its default model), unless its options
    name a model directory. Idempotent: an existing model is reused."""
    for name in names:
        definition = get_definition(name)
        if definition.prepare is None:
            continue
        settings, options = load_service_settings(name, argparse.Namespace(config=config_path))
        if getattr(options, "model_dir", None) is not None:
            continue
        module_name, _, attr = definition.prepare.partition(":")
        build = getattr(importlib.import_module(module_name), attr)
        started = time.monotonic()
        log(f"preparing {name}: default model under {settings.data_dir} ...")
        path = build(settings.data_dir)
        log(f"  {name}: {path} ({time.monotonic() - started:.1f} s)")


def start_suite(
    names: Sequence[str],
    *,
    log_dir: Path,
    config_path: str | None = None,
    free_ports: bool = False,
    extra_args: Sequence[str] = (),
    service_args: Mapping[str, Sequence[str]] | None = None,
    ready_timeout_s: float = 300.0,
    probe_options: Callable[[ServerSettings], ChannelOptions] | None = None,
    prepare_models: bool = True,
    log: Callable[[str], None] = print,
) -> Suite:
    """Start ``names`` and wait until every one is SERVING.

    With ``free_ports`` each service gets a free port instead of its configured one, and the
    address options of the services it calls (``ServiceDefinition.upstreams``) point at the
    started ones. ``extra_args`` go to every ``serve`` command (e.g. ``--log-level warning``),
    ``service_args[name]`` to that service's only (e.g. where it keeps its database).
    On failure every started process is stopped and the error re-raised.
    """
    ordered = sorted(dict.fromkeys(names), key=START_ORDER.index)
    if prepare_models:
        prepare(ordered, config_path, log)
    settings_of = {
        name: load_service_settings(name, argparse.Namespace(config=config_path))[0]
        for name in ordered
    }
    ports = {name: free_port() if free_ports else settings_of[name].port for name in ordered}
    global_args = ["--config", config_path] if config_path else []
    processes = []
    for name in ordered:
        args = [*extra_args, *(service_args or {}).get(name, ())]
        if free_ports:
            for option, upstream in get_definition(name).upstreams.items():
                target = f"127.0.0.1:{ports[upstream]}" if upstream in ports else ""
                args += ["--" + option.replace("_", "-"), target]
            if "--metrics-port" not in args:  # free ports do not reach for the fixed one
                args += ["--metrics-port", "0"]
        host = "127.0.0.1" if free_ports else settings_of[name].host
        processes.append(
            ServiceProcess(
                service=name,
                port=ports[name],
                host=host,
                extra_args=args,
                global_args=global_args,
                log_path=log_dir / f"{name}.log",
            )
        )
    log_dir.mkdir(parents=True, exist_ok=True)
    # Every child starts before this process opens a gRPC channel (no fork after grpc init).
    for proc in processes:
        proc.start()
    suite = Suite(processes, settings_of)
    started = time.monotonic()
    try:
        for proc in processes:
            remaining = max(ready_timeout_s - (time.monotonic() - started), 0.1)
            probe_host = "127.0.0.1" if proc.host in ("0.0.0.0", "::", "[::]") else proc.host
            probe = ServiceProcess(proc.service, proc.port, host=probe_host, process=proc.process)
            options = (
                probe_options(settings_of[proc.service])
                if probe_options
                else ChannelOptions(retry=None)
            )
            probe.wait_serving(remaining, options)
    except BaseException:
        suite.stop()
        raise
    return suite
