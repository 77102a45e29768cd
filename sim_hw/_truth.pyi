"""Types of the compiled ground-truth rows in ``_truth.pyx`` (contiguous arrays: the row
and record bytes as uint8)."""

import numpy as np
from numpy.typing import NDArray

#: SPOT_DTYPE's and TRUTH_DTYPE's sizes, the bytes of the SPOT fields a row copies, and the
#: offsets of TRUTH_DTYPE's measured_uj, time_s and pass_index.
spot_size: int
truth_size: int
common: int
measured_at: int
time_at: int
pass_at: int

def fill_fired_rows(out: NDArray[np.uint8], spots: NDArray[np.uint8],
                    measured_uj: NDArray[np.int64], time_s: NDArray[np.float64],
                    pass_index: int) -> None: ...
