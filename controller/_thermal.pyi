"""Types of the compiled kernels in ``_thermal.pyx`` (numpy references with the same
signatures: :mod:`controller.thermal_ref`). Arrays are C-contiguous, of the dtype named."""

import numpy as np
from numpy.typing import NDArray

from controller.thermal import Layout

F64 = NDArray[np.float64]

#: Blocks per chunk (the tests compare the kernels across chunk boundaries).
chunk_blocks: int
#: Far-grid blocks a window may sample ahead of its own (as thermal_ref.LOOKAHEAD).
lookahead: int
snaps_per_block: int
#: As thermal_ref.COVER_MARGIN, RESOLVED_RATIO and DAMAGE_TAYLOR_RATIO.
cover_margin: float
resolved_ratio: float
damage_taylor_ratio: float
#: exp(-1), as the reference's np.exp(-1.0) at a Gaussian's largest rise over its widths.
inv_e: float

def _fill_exp2() -> None: ...
def fast_exp(x: F64) -> F64: ...
def set_simd(on: bool) -> bool: ...
def set_simd_level(level: int) -> int: ...
def simd_level_max() -> int: ...
def damage_rate(rise: F64, layout: Layout) -> F64: ...
def hold_time(tj: float, s0j: float, layout: Layout) -> float: ...
def lesion_mask(x: F64, y: F64, radius: F64, layout: Layout) -> NDArray[np.bool_]: ...
def peak_rise(
    x: F64, y: F64, t: F64, e: F64, s0: F64, layout: Layout,
) -> tuple[F64, F64, F64, NDArray[np.bool_]]: ...
