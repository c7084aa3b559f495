"""``shoptwin``: the one command-line entry point of the product.

Subcommands: ``up`` (all four services as local processes), ``serve SERVICE``, and the command
groups that service, simulator and load-test packages fill through their ``cli`` modules
(``train``, ``eval``, ``bench``, ``simulate``, ...). Settings come from flags, then
``SHOPTWIN_...`` environment variables, then ``--config FILE`` (TOML or YAML); every value is
validated at start-up and a bad one is reported by name, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from services.cli.commands import CommandGroups, Handler
from services.runtime.logging import configure_logging
from services.runtime.settings import SettingsError

#: Modules that add commands through ``register(groups)``. Each keeps heavy imports (torch,
#: simpy, locust) inside its handlers so that ``--help`` stays fast.
PROVIDERS: tuple[str, ...] = (
    "services.cli.serve",
    "services.cli.up",
    "services.cli.health",
    "services.echo.cli",
    "services.recommendation.cli",
    "services.intent.cli",
    "services.dispatch.cli",
    "services.telemetry.cli",
    "simulator.cli",
    "simulator.capacity.cli",
    "loadtests.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoptwin",
        description="ShopTwin: AI services of an e-commerce platform and their digital twin.",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="TOML or YAML settings file: a [defaults] table and one table per service",
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups = CommandGroups.create(top)
    for module_name in PROVIDERS:
        importlib.import_module(module_name).register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        # A group such as `train` given without its target.
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    configure_logging("info", "console")
    try:
        return handler(args)
    except SettingsError as exc:
        print(f"shoptwin: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
