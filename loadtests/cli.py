"""Commands of this package; filled by its own issue."""

from __future__ import annotations

from services.cli.commands import CommandGroups


def register(groups: CommandGroups) -> None:
    """Add this package's subcommands to the command groups."""
    del groups
