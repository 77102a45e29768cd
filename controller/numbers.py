"""How numbers read beside their limits (no controller imports: validation, the thermal screen
and the CLI all use it)."""

from __future__ import annotations


def distinct_digits(value: float, limit: float, least: int = 4) -> tuple[str, str]:
    """``value`` and ``limit`` with at least ``least`` significant digits, and as many more as
    it takes for unequal numbers to read differently (150.01 over a limit of 150 reads
    "150.01", not "150")."""
    value, limit = value + 0.0, limit + 0.0  # -0.0 reads as 0, as it compares
    for digits in range(least, 18):
        shown = f"{value:.{digits}g}", f"{limit:.{digits}g}"
        if value == limit or shown[0] != shown[1]:
            return shown
    return shown
