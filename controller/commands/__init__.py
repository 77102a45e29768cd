"""One module per ``co2scan`` sub-command; each exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse


def add_command(subparsers: argparse._SubParsersAction, name: str, summary: str,
                description: str) -> argparse.ArgumentParser:
    """A sub-command parser whose help keeps the description's layout (with its examples)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=summary, description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser
