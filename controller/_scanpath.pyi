"""Types of the compiled kernels in ``_scanpath.pyx`` (numpy references with the same
signatures: :mod:`controller.scanpath_ref`). Arrays are C-contiguous, of the dtype named."""

from collections.abc import Sized

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I32 = NDArray[np.int32]

#: As scanpath_ref.GOLDEN (the hash's stream step) and ON_EDGE_REL.
golden: int
on_edge_rel: float

def _same_length(*arrays: Sized) -> int: ...

class EdgeBands:
    def __init__(self, vx: F64, vy: F64) -> None: ...

class CellHash:
    def __init__(self, x: F64, y: F64, radius_um: float) -> None: ...

def grid_points(
    vx: F64, vy: F64, pitch_um: float, hexagonal: bool, offset_x_um: float, offset_y_um: float,
    jitter_half_um: float, key: int, cos_turn: float, sin_turn: float,
) -> tuple[F64, F64, I32, I32]: ...
def near_outline(x: F64, y: F64, vx: F64, vy: F64, radius_um: float) -> NDArray[np.bool_]: ...
def uniform(key: int, n: int) -> F64: ...
def edge_distance(x: F64, y: F64, vx: F64, vy: F64) -> F64: ...
def interlaced_order(i: I32, j: I32, x: F64, y: F64, ki: int, kj: int) -> I32: ...
def min_neighbour_gap(x: F64, y: F64, radius_um: float, cap: int) -> int: ...
def fire_times(
    x: F64, y: F64, pulse_us: I32, stack: I32, period_us: float, speed_um_per_us: float,
    accel_um_per_us2: float, settle_us: float,
) -> tuple[F64, float, float]: ...
def uncovered_samples(
    x: F64, y: F64, radius_um: float, sx: F64, sy: F64, inside: F64, vx: F64, vy: F64,
) -> float: ...
