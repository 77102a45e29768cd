"""One module per ``co2scan`` sub-command; each exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable


def add_command(subparsers: argparse._SubParsersAction, name: str, summary: str,
                description: str) -> argparse.ArgumentParser:
    """A sub-command parser whose help keeps the description's layout (with its examples)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=summary, description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def to_stderr(text: str) -> None:
    """``text`` on stderr after everything printed on stdout so far: stdout off a terminal
    is buffered, so with both on one file (``2>&1``) an error or notice came before (or
    inside) the output it follows. A stdout that cannot be flushed (a reader gone) does not
    keep the message from stderr."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    print(text, file=sys.stderr, flush=True)


def chosen(flag: str | None, script_value: str) -> str:
    """A flag's value over the script's: given, even empty (then refused as blank, instead of
    falling back to the script's), else the script's."""
    return script_value if flag is None else flag


#: The largest session id a record can hold (an SQLite INTEGER row number).
MAX_SESSION_ID = 2**63 - 1


def session_id(text: str) -> int:
    """An argparse type: a session id, 1..MAX_SESSION_ID, written in ASCII digits (a larger
    one ended in an OverflowError traceback from SQLite)."""
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_SESSION_ID):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} rejected; allowed: a session id "
                                         f"1..{MAX_SESSION_ID}")
    return int(text)


def bounded(kind: type[int] | type[float], lo: float, hi: float) -> Callable[[str], float]:
    """An argparse type: a finite ``kind`` number within [lo, hi], else an error naming the
    range (argparse prefixes the option)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and lo <= value <= hi):
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} rejected; allowed: {what} "
                                             f"{lo:g}..{hi:g}")
        return value
    return parse
