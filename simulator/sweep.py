"""Placeholder while this step is being built; the command says so instead of pretending."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments yet."""


def run(args: argparse.Namespace) -> int:
    print("shoptwin: error: this command is not built yet", file=sys.stderr)
    return 2
