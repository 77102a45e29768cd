"""Types of the compiled ground-truth rows in ``_truth.pyx`` (contiguous arrays: the row
and record bytes as uint8)."""

import numpy as np
from numpy.typing import NDArray

def fill_fired_rows(out: NDArray[np.uint8], spots: NDArray[np.uint8],
                    measured_uj: NDArray[np.int64], time_s: NDArray[np.float64],
                    pass_index: int) -> None: ...
