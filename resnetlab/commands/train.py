"""Subcommands of the train group (registered by resnetlab.cli)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the parser."""
