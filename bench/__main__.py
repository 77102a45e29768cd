"""Run every benchmark module (or those named on the command line) in one process.

Usage: ``python -m bench [NAME ...]`` where NAME is e.g. ``scanpath`` for bench/bench_scanpath.py.
Each benchmark measures its variants side by side in the same run and prints ratios.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the benchmarks named in ``argv`` (all of them if empty): exit status 0, or 2 for an
    unknown name."""
    names = sorted(
        m.name[len("bench_"):]
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    chosen = argv or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {names}", file=sys.stderr)
        return 2
    for name in chosen:
        print(f"\n=== bench {name} ===", flush=True)
        importlib.import_module(f"bench.bench_{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
