"""Argument checks shared by the drivers: each raises LimitError naming the field, the value
and what is allowed, before anything is sent."""

from __future__ import annotations

import math
import numbers

import numpy as np

from drivers.errors import LimitError


def check_range(name: str, values: np.ndarray, lo: float, hi: float, unit: str) -> None:
    """Every value a number within lo..hi (NaN is not)."""
    if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.number):
        raise LimitError(name, f"{values.flat[0]!r}" if values.size else "an empty value",
                         f"numbers {lo}..{hi} {unit}".rstrip())
    bad = ~((values >= lo) & (values <= hi))  # NaN too
    if bad.any():
        raise LimitError(name, values[bad].flat[0].item(), f"{lo}..{hi} {unit}".rstrip())


def whole(name: str, value: object, lo: int, hi: int, unit: str) -> int:
    """``value`` as an int within lo..hi: an int, or a float of integral value; LimitError
    naming ``name`` and the range otherwise (a bool, a string, 100.5, NaN...)."""
    allowed = f"whole numbers {lo}..{hi} {unit}".rstrip()
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise LimitError(name, repr(value), allowed)
    if isinstance(value, numbers.Integral):
        as_int = int(value)
    else:
        as_float = float(value)
        if not as_float.is_integer():
            raise LimitError(name, value, allowed)
        as_int = int(as_float)
    if not lo <= as_int <= hi:
        raise LimitError(name, value, allowed)
    return as_int


def real(name: str, value: object, lo: float, hi: float, unit: str) -> float:
    """``value`` as a float within lo..hi (finite: the range is); LimitError naming ``name``
    and the range otherwise (a bool, a string, NaN, infinity...)."""
    allowed = f"numbers {lo}..{hi} {unit}".rstrip()
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise LimitError(name, repr(value), allowed)
    as_float = float(value)
    if not (math.isfinite(as_float) and lo <= as_float <= hi):
        raise LimitError(name, value, allowed)
    return as_float
