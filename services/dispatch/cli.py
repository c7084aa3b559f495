"""Commands of the dispatch service (train, eval, bench); filled by its own issue."""

from __future__ import annotations

from services.cli.commands import CommandGroups


def register(groups: CommandGroups) -> None:
    """Add this service's subcommands to the command groups."""
    del groups
