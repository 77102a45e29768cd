"""The ``co2scan`` command line: one sub-command per job, each with an example in its help."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from controller import __version__
from controller.commands import demo, devices, log, plan, preview, report, run, sim, to_stderr

COMMANDS = (devices, plan, preview, run, log, report, demo, sim)

Command = Callable[[argparse.Namespace], int]

EPILOG = """examples:
  co2scan --version
  co2scan demo --out out/demo
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="co2scan",
        description="Control software for a fractional CO2 laser (galvo scanner, pulse generator).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"co2scan {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


#: Exit status after Ctrl-C outside a delivery (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``co2scan`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except BrokenPipeError:  # `co2scan plan x.toml | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # Ctrl-C outside a delivery (which pauses instead)
        to_stderr("\ninterrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
