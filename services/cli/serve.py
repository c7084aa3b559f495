"""``shoptwin serve SERVICE``: run one service in the foreground."""

from __future__ import annotations

import argparse
import dataclasses

from services.cli.commands import CommandGroups, config_from_args
from services.registry import ALL_SERVICES, get_definition
from services.runtime.config import ServerSettings
from services.runtime.logging import configure_logging
from services.runtime.server import ServiceDefinition
from services.runtime.settings import add_arguments, resolve


def register(groups: CommandGroups) -> None:
    parser = groups.top.add_parser(
        "serve", help="run one service", description="Run one service until SIGTERM or Ctrl-C."
    )
    services = parser.add_subparsers(dest="service", metavar="SERVICE", required=True)
    for definition in ALL_SERVICES.values():
        sub = services.add_parser(
            definition.name,
            help=definition.description,
            description=f"Serve {definition.name} (default port {definition.default_port}, "
            f"metrics {definition.default_metrics_port}). Every flag can also be set as "
            f"SHOPTWIN_{definition.name.upper()}_<NAME>, SHOPTWIN_<NAME> or in --config.",
        )
        add_arguments(
            sub, ServerSettings, title="server", shown_defaults=service_defaults(definition)
        )
        add_arguments(sub, definition.load_options_type(), title=f"{definition.name} options")
        sub.set_defaults(handler=run)


def service_defaults(definition: ServiceDefinition) -> dict[str, object]:
    return {"port": definition.default_port, "metrics_port": definition.default_metrics_port}


def load_service_settings(service: str, args: argparse.Namespace) -> tuple[ServerSettings, object]:
    """Server settings and service options of ``service`` from flags, environment and file."""
    definition = get_definition(service)
    options_type = definition.load_options_type()
    config, config_path = config_from_args(args)
    server_keys = {f.name for f in dataclasses.fields(ServerSettings)}
    option_keys = {f.name for f in dataclasses.fields(options_type)}
    settings = resolve(
        ServerSettings,
        section=service,
        flags=args,
        config=config,
        config_path=config_path,
        overrides=service_defaults(definition),
        sibling_keys=option_keys,
    )
    options: object = resolve(
        options_type,
        section=service,
        flags=args,
        config=config,
        config_path=config_path,
        sibling_keys=server_keys,
    )
    return settings, options


def run(args: argparse.Namespace) -> int:
    from services.runtime.server import run_single
    from services.runtime.workers import run_workers

    settings, options = load_service_settings(args.service, args)
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        return run_workers(args.service, settings, options)
    return run_single(get_definition(args.service), settings, options)
