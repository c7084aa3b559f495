"""The command groups that packages add their subcommands to."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.runtime.settings import load_config_file

Handler = Callable[[argparse.Namespace], int]
SubParsers = argparse._SubParsersAction


@dataclass
class CommandGroups:
    """``top`` holds top-level commands; ``train``, ``eval`` and ``bench`` hold one subcommand
    per target (``shoptwin train intent``)."""

    top: SubParsers
    train: SubParsers
    eval: SubParsers
    bench: SubParsers

    @classmethod
    def create(cls, top: SubParsers) -> CommandGroups:
        def group(name: str, help_text: str) -> SubParsers:
            parser = top.add_parser(name, help=help_text, description=help_text)
            return parser.add_subparsers(dest=f"{name}_target", metavar="TARGET", required=True)

        return cls(
            top=top,
            train=group("train", "train a model"),
            eval=group("eval", "evaluate a model against baselines"),
            bench=group("bench", "benchmark a service beside a baseline measured in the same run"),
        )


def config_from_args(args: argparse.Namespace) -> tuple[dict[str, object], Path | None]:
    """The parsed ``--config`` file (empty without one) and its path."""
    path = Path(args.config) if getattr(args, "config", None) else None
    return load_config_file(path), path


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json [FILE]``: also write the result as JSON, to FILE or to stdout without one
    (``args.json_path`` is then ``Path("-")``)."""
    parser.add_argument(
        "--json",
        dest="json_path",
        type=Path,
        nargs="?",
        const=Path("-"),
        default=None,
        help="also write JSON (to FILE, or stdout without one)",
    )
