"""Plain numpy reference implementations of the Cython scan-path kernels (for tests and bench)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def grid(
    width_um: float, height_um: float, pitch_um: float, hexagonal: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Reference for :func:`controller._scanpath.grid`."""
    if not pitch_um > 0:
        raise ValueError(f"pitch_um must be > 0, got {pitch_um}")
    row_um = pitch_um * np.sqrt(3.0) / 2.0 if hexagonal else pitch_um
    nx = int(width_um / pitch_um) + 1
    ny = int(height_um / row_um) + 1
    i, j = np.meshgrid(np.arange(nx), np.arange(ny))
    shift = np.where(j & 1, pitch_um / 2.0, 0.0) if hexagonal else 0.0
    centre = pitch_um / 4.0 if hexagonal else 0.0
    x = -(nx - 1) * pitch_um / 2.0 + i * pitch_um + shift - centre
    y = -(ny - 1) * row_um / 2.0 + j * row_um
    return x.ravel().astype(np.float64), y.ravel().astype(np.float64)
